"""Every tool's --help states the default of each flag that has one, so what a user reads is what a run does."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

TOOLS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "tools").glob("*.py")
               if not p.name.startswith("_"))


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
