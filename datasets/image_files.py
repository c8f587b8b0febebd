"""Images and label masks on disk: robust photo decoding, palette PNGs of class ids, the VOC colours, void.

Every failure a user can cause (missing, unreadable, truncated, not an image, absurdly large, a colour or JPEG mask,
labels outside the classes) becomes one :class:`~datasets.errors.DataError` line naming the file.
"""
from __future__ import annotations

import glob
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError, one_line

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "check_labels",
    "find_images",
    "image_size",
    "is_turned",
    "label_image",
    "list_images",
    "open_image",
    "read_label_png",
    "read_rgb",
    "save_label_png",
    "voc_palette",
]

#: Label value of unlabelled ("void") pixels: skipped by losses and metrics, the VOC convention.
IGNORE_INDEX = 255
#: File endings taken from a folder of images (compared in lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# Modes holding more than 8 bits per pixel in a single channel (16-bit PNG/TIFF, 32-bit int, float).
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# A 1-bit mask reads as 0/1: the class ids of a background/object data set.
_MASK_MODES = {"1", "P", "L", "I", "I;16"}
# Lossy formats blur every edge into neighbouring values, which a mask would read as other class ids.
_LOSSY_FORMATS = {"JPEG", "MPO"}
_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # transposed, rotated 90 or 270 degrees: width and height swap


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` without Pillow's "decompression bomb DOS attack" warning for photos between its warning
    and error limits (a 100-megapixel camera's): they decode; beyond twice the limit Pillow still refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    with image:
        yield image


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to uint8 ``HxWx3`` RGB as displayed: EXIF rotation applied, wide greys scaled to 8 bits. An
    animation or multi-page file is refused rather than silently read from its first frame."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image")
    try:
        with open_image(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and image.format != "MPO":  # a camera's MPO JPEG holds the photo first, then extras
                raise DataError(f"{path}: holds {frames} frames (an animation or a multi-page file); save the one "
                                "to segment as an image of its own")
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in _WIDE_MODES:
                return _wide_grey_to_rgb(np.asarray(image))
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (or an unsupported format)") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None


def _too_large(path: Path, exc: Image.DecompressionBombError) -> DataError:
    """The one line for an image whose header announces more pixels than Pillow decodes safely."""
    return DataError(f"{path}: image too large to decode safely ({one_line(exc)})")


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of ``path`` as :func:`read_rgb` returns it (EXIF rotation applied), from the header alone."""
    height, width, turned = _header_size(Path(path))
    return (width, height) if turned else (height, width)


def is_turned(path: str | Path) -> bool:
    """Whether ``path``'s EXIF orientation turns it by a quarter turn when shown: its stored width and height swap."""
    return _header_size(Path(path))[2]


def _header_size(path: Path) -> tuple[int, int, bool]:
    """Stored ``(height, width)`` of ``path`` and whether its EXIF orientation swaps them, from the header alone."""
    try:
        with open_image(path) as image:
            width, height = image.size
            return height, width, image.getexif().get(_EXIF_ORIENTATION) in _ROTATED_ORIENTATIONS
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the image header ({one_line(exc)})") from None


def list_images(folder: str | Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files (or files of other ``suffixes``) directly inside ``folder``, sorted by name, hidden ones skipped."""
    return [path for path in _named_like(folder, suffixes) if path.is_file()]


def _named_like(folder: str | Path, suffixes: Sequence[str]) -> list[Path]:
    """Entries of ``folder`` whose names end in one of ``suffixes``, sorted; hidden ones are skipped, as the shell's
    ``*`` skips them (macOS leaves a ``._IMG_0001.JPG`` of metadata beside each photo on drives it did not format)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))


def find_images(inputs: Sequence[str | Path], *, video_suffixes: Sequence[str] = ()) -> tuple[list[Path], list[str]]:
    """Image paths from files, folders (a folder's images, and videos by ``video_suffixes``, by name) and glob
    patterns that no file is named after (``photos/*.jpg``: shells on Windows do not expand them; ``**`` reaches into
    subfolders), and one problem line per input that yields none, and per broken symbolic link that it holds."""
    images, problems = [], []
    for name in inputs:
        path = Path(name)
        if not path.exists() and glob.has_magic(str(name)):
            candidates = sorted(Path(match) for match in glob.glob(str(name), recursive=True))  # ** as bash's globstar
            nothing = f"{path}: no file matches this pattern"
        elif path.is_dir():
            candidates = _named_like(path, (*IMAGE_SUFFIXES, *video_suffixes))
            nothing = f"{path}: folder holds no images{' or videos' if video_suffixes else ''}"
        elif path.exists():
            images.append(path)
            continue
        else:
            problems.append(f"{path}: no such file or folder")
            continue
        files, broken = [candidate for candidate in candidates if candidate.is_file()], _broken_links(candidates)
        images += files
        problems += broken or ([] if files else [nothing])
    return images, list(dict.fromkeys(problems))  # a link found by a folder and a pattern is said once


def _broken_links(paths: Sequence[Path]) -> list[str]:
    """One line per symbolic link among ``paths`` whose target is missing (a drive not mounted): said, not skipped."""
    return [f"{path}: broken symbolic link (its target {os.readlink(path)} is missing)"
            for path in paths if path.is_symlink() and not path.exists()]


def _wide_grey_to_rgb(values: np.ndarray) -> np.ndarray:
    """Map a >8-bit greyscale array to uint8 RGB: 16-bit range scaled by 1/257, floating point in [0, 1] (the
    usual range of float TIFFs) by 255, 8-bit-range values kept."""
    floating = np.issubdtype(values.dtype, np.floating)
    values = np.nan_to_num(values.astype(np.float64))
    peak = values.max(initial=0.0)
    if peak > 255.0:
        values = values / 257.0
    elif floating and peak <= 1.0:
        values = values * 255.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """``(num_colors, 3)`` uint8 RGB colours of the VOC devkit's ``labelcolormap`` (bits of the id interleaved)."""
    ids = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> channel) & 1
            palette[:, channel] |= (bit << (7 - shift)).astype(np.uint8)
        ids = ids >> 3
    return palette


def label_image(mask: np.ndarray) -> Image.Image:
    """A uint8 HxW class-id mask as a VOC palette image (pixel values stay the class ids, shown in VOC colours)."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette().tobytes())
    return image


def save_label_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a uint8 HxW class-id mask as a VOC palette PNG (pixel values stay the class ids)."""
    label_image(mask).save(path, optimize=False)


def read_label_png(path: Path, num_classes: int) -> np.ndarray:
    """Read a class-id mask (uint8 HxW), raising DataError on a colour or JPEG mask or values outside the classes."""
    try:
        with open_image(path) as image:
            image.load()
            if image.format in _LOSSY_FORMATS:
                raise DataError(f"{path}: mask is {image.format}-compressed, which turns the class ids along every "
                                "edge into other ids; save masks as PNG")
            if image.mode not in _MASK_MODES:
                raise DataError(
                    f"{path}: mask has mode {image.mode}; expected a palette or greyscale PNG of class ids"
                )
            mask = np.asarray(image)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file is missing") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode mask ({one_line(exc)})") from None
    check_labels(mask, num_classes, path)
    return mask.astype(np.uint8, copy=False)


def check_labels(mask: np.ndarray, num_classes: int, path: Path) -> None:
    """Raise DataError naming ``path`` and the bad values if a label is outside [0, num_classes) and not void."""
    if mask.size == 0:
        raise DataError(f"{path}: mask is empty")
    if mask.min() < 0:
        raise DataError(f"{path}: negative label values {sorted(np.unique(mask[mask < 0]).tolist())[:10]}")
    counts = np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    bad = bad[bad != IGNORE_INDEX]
    if bad.size:
        raise DataError(
            f"{path}: label values {bad[:10].tolist()} outside 0..{num_classes - 1} "
            f"(and {IGNORE_INDEX} = void); masks in another format, or a classes.txt at the data root that lists "
            f"too few classes (without one, VOC's 21)?"
        )
