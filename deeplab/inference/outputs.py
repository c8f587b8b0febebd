"""Prediction files: the palette PNG of class ids and the colour overlay with its legend, per input image."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from datasets.image_files import save_label_png

from ..errors import UserError
from .overlay import overlay

__all__ = ["save_prediction"]


def save_prediction(
    out_dir: Path, stem: str, image: np.ndarray, mask: np.ndarray, *, class_names: Sequence[str], alpha: float
) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` into ``out_dir``; returns both paths."""
    mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
    try:
        save_label_png(mask_path, mask)
        Image.fromarray(overlay(image, mask, alpha=alpha, class_names=class_names)).save(overlay_path)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write results ({exc.strerror or exc})") from None
    return mask_path, overlay_path
