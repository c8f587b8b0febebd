"""Imports point one way: tools -> deeplab -> backbones, datasets. Read from the source, so a new module that
imports upward fails here before it creates a cycle."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LOWER = ("backbones", "datasets")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def package_of(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] != "__init__" else ".".join(parts[:-1])


@pytest.mark.parametrize("top", LOWER)
def test_backbones_and_datasets_never_import_deeplab_or_each_other(top: str) -> None:
    for path in sorted((REPO_ROOT / top).rglob("*.py")):
        for name in imported_modules(path, package_of(path)):
            root = name.split(".")[0]
            assert root != "deeplab" and root not in set(LOWER) - {top}, f"{path.relative_to(REPO_ROOT)} imports {name}"


def test_deeplab_modules_never_import_the_package_root() -> None:
    """``deeplab/__init__`` gathers the public API; a module importing it back would import everything circularly."""
    for path in sorted((REPO_ROOT / "deeplab").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name == "deeplab":
            continue
        names = imported_modules(path, package_of(path))
        assert "deeplab" not in names, f"{path.relative_to(REPO_ROOT)} imports deeplab's root package"


def test_library_never_imports_tools() -> None:
    for top in ("deeplab", *LOWER):
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            names = imported_modules(path, package_of(path))
            assert not any(n.split(".")[0] in ("tools", "_checkout") for n in names), path


def test_the_lazy_public_names_are_listed_before_first_use() -> None:
    """``dir(deeplab)`` (a notebook's completion) lacked Predictor, build_model... until they were first used."""
    code = "import deeplab, sys; print(set(deeplab.__all__) - set(dir(deeplab)), 'deeplab.models' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["set()", "False"]  # listed, and still not imported
