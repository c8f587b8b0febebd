"""Flags that predict.py and app.py share: how far images are shrunk for the model, and how the overlay blends."""
from __future__ import annotations

import argparse

from deeplab.errors import UserError

__all__ = ["add_image_flags", "check_image_flags"]


def add_image_flags(parser: argparse.ArgumentParser, *, alpha_help: str) -> None:
    """``--alpha`` (the colour mask's weight in the overlay) and ``--max-size`` (the long side the model sees)."""
    parser.add_argument("--alpha", type=float, default=0.5, help=alpha_help)
    parser.add_argument("--max-size", type=int, default=1024,
                        help="shrink images whose long side is larger before segmenting (0: never)")


def check_image_flags(args: argparse.Namespace) -> None:
    """Refuse values no overlay or model input can use, naming the flag, before any work."""
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must lie between 0 and 1")
    if args.max_size < 0:
        raise UserError(f"--max-size {args.max_size}: must be a number of pixels, or 0 to never shrink")
