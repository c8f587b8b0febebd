"""Pictures of results: colour overlays with a class legend, and confusion-matrix plots."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .palette import voc_palette

__all__ = ["overlay", "plot_confusion_matrix"]


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
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    palette = voc_palette() if palette is None else palette
    # cv2 blends uint8 to uint8 directly: no float copies of large photos.
    blended = cv2.addWeighted(np.ascontiguousarray(image), 1.0 - alpha, palette[mask], alpha, 0.0)
    canvas = Image.fromarray(blended)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=1))
    names = [class_names[i] if class_names is not None and i < len(class_names) else str(i) for i in present]
    _draw_legend(canvas, [tuple(int(c) for c in palette[i]) for i in present], names)
    return np.asarray(canvas)


def _draw_legend(canvas: Image.Image, colours: list[tuple[int, ...]], names: list[str]) -> None:
    """Draw one swatch and name per class in the top-left corner, on a dark box, scaled to the image."""
    if not names:
        return
    size = max(8, min(canvas.size) // 30)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(canvas, "RGBA")
    pad, line = max(2, size // 4), size + max(2, size // 4)
    width = max(draw.textlength(name, font=font) for name in names) + size + 3 * pad
    draw.rectangle((0, 0, width, pad + line * len(names)), fill=(0, 0, 0, 160))
    for row, (colour, name) in enumerate(zip(colours, names)):
        top = pad + row * line
        draw.rectangle((pad, top, pad + size, top + size), fill=colour, outline=(255, 255, 255))
        draw.text((2 * pad + size, top), name, fill=(255, 255, 255), font=font)


def plot_confusion_matrix(matrix: torch.Tensor | np.ndarray, class_names: Sequence[str], path: str | Path) -> None:
    """Save a row-normalised confusion matrix (rows: ground truth, columns: prediction) as a PNG."""
    from matplotlib.figure import Figure  # deferred: only reports need matplotlib

    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n = len(class_names)
    side = max(4.0, 0.4 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of ground-truth pixels")
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
