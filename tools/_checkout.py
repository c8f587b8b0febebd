"""Put this checkout first on ``sys.path``: every tool imports this module first, so ``import datasets`` finds
the checkout's data package, not Hugging Face's ``datasets`` that may be installed under the same name."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
