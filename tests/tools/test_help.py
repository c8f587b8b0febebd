"""Every tool's --help states the default of each flag that has one, so what a user reads is what a run does; and
a tool runs as a module (``python -m tools.predict``) as it does as a script."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS = sorted(p.stem for p in (REPO_ROOT / "tools").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("name", TOOLS)
def test_help_states_every_default(name: str) -> None:
    parser = importlib.import_module(f"tools.{name}").get_args_parser()
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
            continue
        shown = action.help or ""
        value = "all" if action.default == action.choices else " ".join(map(str, action.default)) \
            if isinstance(action.default, list) else str(action.default)
        assert "default" in shown and value in shown, f"{name} {action.option_strings[-1]}: {shown!r}"


def test_a_tool_runs_as_a_module_from_the_checkout() -> None:
    """``python -m tools.predict`` finds its private siblings (``_checkout``, ``_image_flags``) too."""
    result = subprocess.run([sys.executable, "-m", "tools.predict", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: predict.py"), result.stderr
