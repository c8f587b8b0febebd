"""Command-line tools, run as scripts (``python tools/train.py``) or as modules (``python -m tools.train``): either
way their private siblings (``_checkout``, ``_image_flags``) import by their plain names."""
from __future__ import annotations

import sys
from pathlib import Path

_TOOLS = str(Path(__file__).resolve().parent)
if _TOOLS not in sys.path:
    sys.path.append(_TOOLS)
