"""Flags that predict.py and app.py share: how far images are shrunk for the model, how the overlay blends, the
test-time views averaged (eval.py's too), and which images calibrate the int8 engines."""
from __future__ import annotations

import argparse
from pathlib import Path

from datasets import find_images
from deeplab.errors import UserError
from deeplab.inference.outputs import split_earlier_predictions

__all__ = ["add_image_flags", "add_view_flags", "calibration_images", "check_image_flags"]


def add_image_flags(parser: argparse.ArgumentParser, *, alpha_help: str, calibration_default: str) -> None:
    """``--alpha`` (the colour mask's weight in the overlay), ``--max-size`` (the long side the model sees),
    ``--flip`` and ``--any-orientation`` (the views averaged) and ``--calibration`` (int8's images;
    ``calibration_default`` says what they are without it)."""
    parser.add_argument("--alpha", type=float, default=0.5, help=f"{alpha_help} (default 0.5)")
    parser.add_argument("--max-size", type=int, default=1024,
                        help="shrink images whose long side is larger before segmenting (default 1024; 0: never)")
    add_view_flags(parser)
    parser.add_argument("--calibration", metavar="DIR",
                        help=f"int8 engines: calibrate on the images in DIR (default: {calibration_default}); auto "
                             "also checks its choice on them when the checkpoint's validation images are not here")


def add_view_flags(parser: argparse.ArgumentParser) -> None:
    """``--flip`` and ``--any-orientation``: the test-time views averaged (eval.py takes them too)."""
    parser.add_argument("--flip", action="store_true",
                        help="also segment each image mirrored and average the two (twice the time)")
    parser.add_argument("--any-orientation", action="store_true",
                        help="average over all eight mirrors and quarter turns of each image (8x the time; for images "
                        "with no up or down, e.g. a model trained with --any-orientation)")


def calibration_images(args: argparse.Namespace) -> list[Path] | None:
    """The images of ``--calibration`` (None without it), less the masks and overlays predict.py wrote there (class
    colours, not photos: they would skew int8's ranges); UserError when it names nothing usable."""
    if not args.calibration:
        return None
    images, missing = find_images([args.calibration])
    if missing:
        raise UserError(f"--calibration: {missing[0]}")
    photos, _ = split_earlier_predictions(images)
    if not photos:
        raise UserError(f"--calibration: {args.calibration}: holds only masks and overlays that predict.py wrote")
    return photos


def check_image_flags(args: argparse.Namespace) -> None:
    """Refuse values no overlay or model input can use, naming the flag, before any work."""
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must lie between 0 and 1")
    if args.max_size < 0:
        raise UserError(f"--max-size {args.max_size}: must be a number of pixels, or 0 to never shrink")
