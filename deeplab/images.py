"""Robust image reading for prediction: EXIF orientation, greyscale, alpha, 16-bit and broken files.

Every failure a user can cause (missing, unreadable, truncated, not an image, absurdly large) becomes one
:class:`~deeplab.errors.UserError` line naming the file, so a batch run can report it and move on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError, one_line

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_rgb"]

#: File endings taken from a folder given to predict (compared in lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# Modes holding more than 8 bits per pixel in a single channel (16-bit PNG/TIFF, 32-bit int, float).
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to uint8 ``HxWx3`` RGB as displayed: EXIF rotation applied, wide greys scaled to 8 bits."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in _WIDE_MODES:
                return _wide_grey_to_rgb(np.asarray(image))
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file (or an unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path}: image too large to decode safely ({one_line(exc)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (by suffix), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _wide_grey_to_rgb(values: np.ndarray) -> np.ndarray:
    """Map a >8-bit greyscale array to uint8 RGB: 16-bit range scaled by 1/257, 8-bit-range values kept."""
    values = values.astype(np.float64)
    if values.max(initial=0.0) > 255.0:
        values = values / 257.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
