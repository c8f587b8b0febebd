"""Our top-level ``datasets`` package wins over Hugging Face's when both are importable (tools/_checkout.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case starts a fresh interpreter
REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = sorted(p for p in (REPO_ROOT / "tools").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def decoy_path(tmp_path: Path) -> str:
    """A fake Hugging Face ``datasets`` placed first on PYTHONPATH, which fails loudly when imported."""
    decoy = tmp_path / "datasets"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('decoy Hugging Face datasets was imported')\n")
    return str(tmp_path)


@pytest.mark.parametrize("tool", TOOLS, ids=[t.stem for t in TOOLS])
def test_tool_imports_our_datasets_despite_decoy(tool: Path, decoy_path: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": decoy_path}
    result = subprocess.run([sys.executable, str(tool), "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "decoy" not in result.stderr


def test_library_import_finds_ours_from_repo_root(decoy_path: str) -> None:
    code = "import sys; sys.path.insert(0, '.'); import datasets; print(datasets.__file__)"
    env = {**os.environ, "PYTHONPATH": decoy_path}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == REPO_ROOT / "datasets" / "__init__.py"


def test_library_without_our_datasets_says_how_to_fix_it(decoy_path: str, tmp_path: Path) -> None:
    code = "import deeplab"
    env = {**os.environ, "PYTHONPATH": decoy_path}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "needs this checkout's `datasets` package" in result.stderr and "decoy" not in result.stderr
