"""Built-in demo dataset: seeded synthetic scenes written as a VOC-format folder, so training runs offline.

Each 128x128 scene has a varied background (a low-saturation gradient, thin lines and elongated blobs of any
colour, all labelled background) and 1-4 possibly overlapping objects of four classes, each with its own shape
and base colour: circle (red), square (green), triangle (blue), cross (yellow). Colours are jittered, some
objects carry stripes, objects may leave the frame, and Gaussian noise plus JPEG coding blur the cues, so the
task is learnable in minutes on a CPU but not solvable by one pixel's colour alone.

The ``demo-rare`` variant adds a rare, small class: a violet diamond a few pixels across, drawn on top in about a
quarter of the scenes, so it covers about 0.1% of the labelled pixels (the imbalance of real custom data).
"""
from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import DataError, one_line
from .image_files import save_label_png
from .voc import split_file, voc_dir

try:
    import fcntl
except ImportError:  # not POSIX: runs started together on a fresh demo folder are not kept apart
    fcntl = None

__all__ = ["DEMO_CLASSES", "DEMO_VARIANTS", "DemoVariant", "ensure_demo_dataset", "render_scene"]

DEMO_CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle", "cross")
_BASE_COLOURS = np.array([(0, 0, 0), (215, 60, 50), (60, 170, 75), (55, 90, 215), (225, 195, 50)], dtype=np.float32)
_RARE_COLOUR = np.array((170, 70, 215), dtype=np.float32)
_VERSION = 1  # bump whenever the rendering changes, so old folders are told apart from new ones
_SIZE = 128
_MARKER = "demo_dataset.json"
_LOCK = ".demo_dataset.lock"


@dataclass(frozen=True)
class DemoVariant:
    """A demo dataset: its classes, split sizes, and the chance that a scene holds one rare object (last class)."""

    classes: tuple[str, ...]
    splits: dict[str, int]
    rare_chance: float = 0.0


DEMO_VARIANTS: dict[str, DemoVariant] = {
    "demo": DemoVariant(DEMO_CLASSES, {"train": 200, "val": 40}),
    # A larger validation split, so the few rare objects give a steadier IoU.
    "demo-rare": DemoVariant((*DEMO_CLASSES, "diamond"), {"train": 200, "val": 100}, rare_chance=0.25),
}


def render_scene(
    rng: np.random.Generator, size: int = _SIZE, *, rare_chance: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: uint8 HxWx3 RGB image and uint8 HxW class-id mask; with ``rare_chance`` a small
    rare object (class id 5) is drawn on top of everything."""
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, len(DEMO_CLASSES)))
        region = _shape_region(rng, cls, size)
        mask[region] = cls
        colour = _BASE_COLOURS[cls] + rng.normal(0.0, 18.0, 3)
        image[region] = colour * rng.uniform(0.75, 1.15) * _stripes(rng, size)[region][:, None]
    if rare_chance and rng.random() < rare_chance:
        region = _rare_region(rng, size)
        mask[region] = len(DEMO_CLASSES)
        image[region] = (_RARE_COLOUR + rng.normal(0.0, 18.0, 3)) * rng.uniform(0.75, 1.15)
    image += rng.uniform(3.0, 12.0) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A greyish gradient with distractors (thin lines, elongated blobs) in arbitrary colours, as float32."""
    grey = rng.uniform(50.0, 200.0, (2, 1)) + rng.uniform(-30.0, 30.0, (2, 3))
    angle = rng.uniform(0.0, 2 * np.pi)
    yy, xx = _grid(size)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + size) / (2.0 * size)
    image = (grey[0] * (1 - t[..., None]) + grey[1] * t[..., None]).astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(float(c) for c in rng.uniform(0.0, 255.0, 3))
        p0, p1 = (tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2))
        if rng.random() < 0.5:
            cv2.line(image, p0, p1, colour, int(rng.integers(1, 4)))
        else:
            axes = (int(rng.integers(12, 30)), int(rng.integers(2, 5)))
            cv2.ellipse(image, p0, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return image


@functools.lru_cache(maxsize=2)
def _grid(size: int) -> np.ndarray:
    """Pixel row and column coordinates (2xHxW float32), computed once per size."""
    return np.mgrid[0:size, 0:size].astype(np.float32)


def _shape_region(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """Boolean HxW region of one object of class ``cls`` at a random place, size and rotation."""
    layer = np.zeros((size, size), dtype=np.uint8)
    radius = rng.uniform(10.0, 28.0)
    centre = rng.uniform(radius / 2, size - radius / 2, 2)
    theta = rng.uniform(0.0, 2 * np.pi)
    if cls == 1:
        cv2.circle(layer, (int(centre[0]), int(centre[1])), int(radius), 1, -1)
    elif cls in (2, 3):
        corners = 4 if cls == 2 else 3
        angles = theta + 2 * np.pi * np.arange(corners) / corners
        cv2.fillPoly(layer, [_points(centre, radius, angles)], 1)
    else:
        for arm in (theta, theta + np.pi / 2):
            half = np.array([[1.0, 0.3], [1.0, -0.3], [-1.0, -0.3], [-1.0, 0.3]]) * radius
            rot = np.array([[np.cos(arm), -np.sin(arm)], [np.sin(arm), np.cos(arm)]])
            cv2.fillPoly(layer, [np.round(centre + half @ rot.T).astype(np.int32)], 1)
    return layer.astype(bool)


def _rare_region(rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean HxW region of a small diamond (a rhombus 5-8 pixels from centre to tip), wholly inside the frame."""
    layer = np.zeros((size, size), dtype=np.uint8)
    radius = rng.uniform(5.0, 8.0)
    centre = rng.uniform(radius + 1, size - radius - 1, 2)
    theta = rng.uniform(0.0, np.pi)
    angles = theta + np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2])
    scales = np.array([1.0, 0.6, 1.0, 0.6])
    points = centre + radius * scales[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    cv2.fillPoly(layer, [np.round(points).astype(np.int32)], 1)
    return layer.astype(bool)


def _points(centre: np.ndarray, radius: float, angles: np.ndarray) -> np.ndarray:
    """Polygon vertices at ``angles`` on a circle, as the int32 array cv2 wants."""
    return np.round(centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.int32)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """A shading field: flat for half the objects, sinusoidal stripes for the rest (texture variety)."""
    if rng.random() < 0.5:
        return np.ones((size, size), dtype=np.float32)
    angle, period = rng.uniform(0.0, np.pi), rng.uniform(4.0, 10.0)
    yy, xx = _grid(size)
    return (1.0 + 0.25 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)).astype(np.float32)


def ensure_demo_dataset(root: str | Path, *, seed: int = 0, variant: str = "demo") -> Path:
    """Write the demo dataset ``variant`` (a key of :data:`DEMO_VARIANTS`) under ``root`` (VOCdevkit/VOC2012 +
    classes.txt) unless it is already current."""
    if variant not in DEMO_VARIANTS:
        raise DataError(f"demo variant {variant!r}: choose one of {', '.join(DEMO_VARIANTS)}")
    spec = DEMO_VARIANTS[variant]
    root = Path(root)
    marker = root / _MARKER
    wanted = {"generator": "deeplab-demo", "version": _VERSION, "seed": seed, "size": _SIZE,
              "splits": spec.splits, "complete": True}
    if variant != "demo":  # the plain demo's marker stays as it was, so existing folders stay current
        wanted["variant"] = variant
    if _is_current(root, spec, wanted):
        return root
    try:
        with _writing_lock(root):
            if _is_current(root, spec, wanted):  # written meanwhile by a run started at the same time
                return root
            # Marked before writing, so an interrupted run is recognised as ours and redone next time.
            marker.write_text(json.dumps({**wanted, "complete": False}, sort_keys=True) + "\n", encoding="utf-8")
            shutil.rmtree(root / "VOCdevkit", ignore_errors=True)
            _write_scenes(root, seed, spec)
            (root / "classes.txt").write_text("\n".join(spec.classes) + "\n", encoding="utf-8")
            marker.write_text(json.dumps(wanted, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{root}: cannot write the demo data here ({exc.strerror or one_line(exc)}); "
                        "pass --data-root a writable folder") from None
    return root


def _is_current(root: Path, spec: DemoVariant, wanted: dict) -> bool:
    """Whether ``root`` holds the finished demo data ``wanted`` describes; DataError when it holds data not ours to
    overwrite (see :func:`_check_ours`), False when it is to be written."""
    marker = root / _MARKER
    held = _read_marker(marker)
    if held == wanted and all(split_file(root, s).is_file() for s in spec.splits):
        return True
    _check_ours(root, marker, held, wanted)
    return False


@contextlib.contextmanager
def _writing_lock(root: Path) -> Iterator[None]:
    """Hold ``root``'s lock for the block: a second process asking for the demo data meanwhile (two runs started
    together) waits and then finds it written, instead of deleting the files the first one is writing."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _LOCK, "a", encoding="utf-8") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _read_marker(marker: Path) -> dict | None:
    """The marker's content, or None when it is absent or unreadable (then we regenerate)."""
    try:
        held = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return held if isinstance(held, dict) else None


def _check_ours(root: Path, marker: Path, held: dict | None, wanted: dict) -> None:
    """Refuse to overwrite a dataset we did not write (e.g. a real VOC folder given as the demo root), or a finished
    demo dataset of another variant, seed or generator version: checkpoints may have been trained on it, and the
    user may have added files. Only a write of ours that was interrupted is redone."""
    if held is not None and held.get("complete", True):
        if held == wanted:  # finished, but a split file has gone since: not ours to repair silently
            raise DataError(f"{root}: the demo dataset here lacks a split file; delete the folder to have it "
                            "written again")
        raise DataError(f"{root}: holds the demo data {_describe(held)}, not {_describe(wanted)}; pass another "
                        "--data-root (or delete that folder to have it rewritten)")
    if marker.exists():
        return
    for path in (root / "VOCdevkit", root / "classes.txt"):
        if path.exists():
            raise DataError(f"{path}: exists and is not the demo dataset; choose an empty folder for the demo data")


def _describe(marker: dict) -> str:
    """``'demo-rare, seed 1, generator version 1'``: what a demo folder's marker says it holds."""
    return (f"{marker.get('variant', 'demo')}, seed {marker.get('seed')}, generator version "
            f"{marker.get('version')}")


def _write_scenes(root: Path, seed: int, spec: DemoVariant) -> None:
    """Render every split's scenes (each from its own seeded generator) and write images, masks and id lists."""
    base = voc_dir(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    all_ids = []
    for split_index, (split, count) in enumerate(spec.splits.items()):
        ids = [f"{split}_{i:04d}" for i in range(count)]
        for i, sample_id in enumerate(ids):
            image, mask = render_scene(np.random.default_rng([seed, split_index, i]), rare_chance=spec.rare_chance)
            Image.fromarray(image).save(base / "JPEGImages" / f"{sample_id}.jpg", quality=92)
            save_label_png(base / "SegmentationClass" / f"{sample_id}.png", mask)
        split_file(root, split).write_text("\n".join(ids) + "\n", encoding="utf-8")
        all_ids += ids
    split_file(root, "trainval").write_text("\n".join(all_ids) + "\n", encoding="utf-8")
