"""Pictures of predictions: the image blended with its colour mask, with a legend of the classes present."""
from __future__ import annotations

import functools
import importlib.util
import unicodedata
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datasets.image_files import check_rgb_array, voc_palette

__all__ = ["class_label", "overlay"]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    alpha: float = 0.5,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Blend ``image`` (uint8 HxWx3) with the colours of ``mask`` (HxW ids) at ``alpha``; legend of present classes.

    The result has the image's size; legend entries are named from ``class_names`` where given, else by id.
    """
    check_rgb_array(image)
    mask = np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    _check_class_ids(mask, len(palette))
    # cv2 blends uint8 to uint8 directly: no float copies of large photos.
    blended = cv2.addWeighted(np.ascontiguousarray(image), 1.0 - alpha, palette[mask], alpha, 0.0)
    canvas = Image.fromarray(blended)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=1))
    names = [class_label(class_names, i) for i in present]
    _draw_legend(canvas, [tuple(int(c) for c in palette[i]) for i in present], names)
    return np.asarray(canvas)


def _check_class_ids(mask: np.ndarray, colours: int) -> None:
    """ValueError unless ``mask`` holds integer class ids that ``colours`` palette entries colour (numpy's indexing
    errors name no mask, and a float mask of scores would have no classes)."""
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask: expected integer class ids, got {mask.dtype}; take the argmax of scores first")
    if mask.size and (mask.min() < 0 or mask.max() >= colours):
        raise ValueError(f"mask: class ids {mask.min()}..{mask.max()}, but the palette colours 0..{colours - 1}")


def _draw_legend(canvas: Image.Image, colours: list[tuple[int, ...]], names: list[str]) -> None:
    """Draw one swatch and name per class in the top-left corner, on a dark box, scaled to the image."""
    if not names:
        return
    size = max(8, min(canvas.size) // 30)
    font = _legend_font(size)
    draw = ImageDraw.Draw(canvas, "RGBA")
    pad, line = max(2, size // 4), size + max(2, size // 4)
    width = max(draw.textlength(name, font=font) for name in names) + size + 3 * pad
    draw.rectangle((0, 0, width, pad + line * len(names)), fill=(0, 0, 0, 160))
    for row, (colour, name) in enumerate(zip(colours, names)):
        top = pad + row * line
        draw.rectangle((pad, top, pad + size, top + size), fill=colour, outline=(255, 255, 255))
        draw.text((2 * pad + size, top), name, fill=(255, 255, 255), font=font)


def class_label(class_names: Sequence[str] | None, class_id: int) -> str:
    """The name shown for ``class_id``: its entry in ``class_names`` on one line (control characters such as line
    breaks and tabs as spaces), or the id itself where the name is missing or blank."""
    name = class_names[class_id] if class_names is not None and class_id < len(class_names) else ""
    name = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in name).strip()
    return name or str(class_id)


@functools.lru_cache(maxsize=8)
def _legend_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (Latin, Greek, Cyrillic; shipped with matplotlib) at ``size`` pixels, else Pillow's default font,
    whose glyphs stop at ASCII: accented names would show empty boxes."""
    spec = importlib.util.find_spec("matplotlib")  # found, not imported: importing it costs predict.py its start
    for folder in (spec.submodule_search_locations or ()) if spec is not None else ():
        try:
            return ImageFont.truetype(str(Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)
