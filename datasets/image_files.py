"""Images and label masks on disk: robust photo decoding, palette PNGs of class ids, RGB colour masks, the VOC
colours, void.

Every failure a user can cause (missing, unreadable, truncated, not an image, absurdly large, a colour outside the
mask colours, a see-through or JPEG mask, labels outside the classes) becomes one
:class:`~datasets.errors.DataError` line naming the file.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError, one_line

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_SUFFIXES",
    "ColourTable",
    "check_labels",
    "check_rgb_array",
    "find_images",
    "image_size",
    "is_turned",
    "label_image",
    "list_images",
    "open_image",
    "read_label_png",
    "read_rgb",
    "save_label_png",
    "voc_colour_table",
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
# Colour masks, decoded to class ids through a ColourTable (RGBA only when fully opaque).
_COLOUR_MODES = {"RGB", "RGBA"}
_WHAT_MASKS_ARE = ("a mask is a palette or greyscale PNG of class ids, or RGB in the VOC palette's colours or in "
                   "those of labelmap.txt at the data root")
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


def check_rgb_array(image: Any) -> None:
    """ValueError unless ``image`` is a uint8 ``HxWx3`` RGB numpy array, as :func:`read_rgb` gives (a float image in
    [0, 1] would be read as nearly black, a greyscale or RGBA one fail inside OpenCV or torch)."""
    if not isinstance(image, np.ndarray):  # a PIL image or a tensor has no dtype, or a torch one that reads alike
        kind = f"{type(image).__module__}.{type(image).__qualname__}"
        raise ValueError(f"expected a uint8 H x W x 3 RGB numpy array, got a {kind}: pass np.asarray(image) of a "
                         "PIL image converted to RGB, or tensor.permute(1, 2, 0).numpy() of a 3 x H x W uint8 tensor")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 RGB image, got {image.dtype} of shape {image.shape} "
                         "(datasets.read_rgb decodes any image file to one)")


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


def find_images(inputs: Sequence[str | Path] | str | Path, *, video_suffixes: Sequence[str] = ()
                ) -> tuple[list[Path], list[str]]:
    """Image paths from files, folders (a folder's images, and videos by ``video_suffixes``, by name) and glob
    patterns that no file is named after (``photos/*.jpg``: shells on Windows do not expand them; ``**`` reaches into
    subfolders), and one problem line per input that yields none, and per broken symbolic link that it holds. A
    single name is one input (a string is a sequence too, whose letters would be looked for one by one)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
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
    """A uint8 HxW class-id mask as a VOC palette image (pixel values stay the class ids, shown in VOC colours).
    Other integer (or bool) masks are taken when their ids fit 0..255; anything else is a ValueError: a cast wrapped
    id 300 to 44 and an ignore label of -100 to class 156, and truncated float scores, without a word."""
    mask = np.asarray(mask)
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask: expected integer class ids, got {mask.dtype}")
    if mask.dtype != np.uint8 and mask.size and (mask.min() < 0 or mask.max() > IGNORE_INDEX):
        raise ValueError(f"mask: class ids {mask.min()}..{mask.max()} do not fit an 8-bit PNG (0..254, "
                         f"{IGNORE_INDEX} = void); map an ignore label such as -1 or -100 to {IGNORE_INDEX}")
    image = Image.fromarray(mask.astype(np.uint8, copy=False), mode="P")
    image.putpalette(voc_palette().tobytes())
    return image


def save_label_png(path: str | Path, mask: np.ndarray) -> None:
    """Write a uint8 HxW class-id mask as a VOC palette PNG (pixel values stay the class ids)."""
    label_image(mask).save(path, optimize=False)


@dataclass(frozen=True, eq=False)
class ColourTable:
    """The colours of RGB masks and the class id each stands for (``colours[k]`` is id ``ids[k]``), and where they
    come from, for messages."""

    colours: np.ndarray  # (K, 3) uint8, each colour once
    ids: np.ndarray  # (K,) uint8
    source: str

    def fingerprint(self) -> str:
        """A digest of the colours and their ids, all that decoding depends on: caches of decoded masks key on it."""
        return hashlib.sha256(np.ascontiguousarray(self.colours, np.uint8).tobytes()
                              + np.ascontiguousarray(self.ids, np.uint8).tobytes()).hexdigest()


@functools.cache
def voc_colour_table() -> ColourTable:
    """The VOC devkit's mask colours: colour i of :func:`voc_palette` is class id i, void's (224, 224, 192) is 255."""
    return ColourTable(voc_palette(), np.arange(256, dtype=np.uint8), "the VOC palette")


def read_label_png(path: Path, num_classes: int, colours: Sequence[ColourTable] | None = None) -> np.ndarray:
    """Read a class-id mask (uint8 HxW): a palette or greyscale PNG of ids, or an RGB one decoded by the first of
    ``colours`` (default: the VOC palette) that holds all its colours; DataError on anything else."""
    tables = colours or (voc_colour_table(),)
    pixels, palette = _read_mask_pixels(path)
    if pixels.ndim == 3:
        mask = _colour_ids(pixels, tables, path)
    else:
        mask = pixels if palette is None else _palette_ids(pixels, palette, tables)
    check_labels(mask, num_classes, path)
    return mask.astype(np.uint8, copy=False)


def _palette_ids(indices: np.ndarray, palette: np.ndarray, tables: Sequence[ColourTable]) -> np.ndarray:
    """Class ids of a palette mask: its indices, unless its palette gives the indices it uses other classes' colours,
    each its own, all in the first table holding them; such a mask (an RGB colour mask re-saved as a palette image,
    whose indices come in any order) is read by colour, as it shows."""
    if all(_keeps_ids(palette, table) for table in tables):  # the usual palette (VOC's): no pass over the pixels
        return indices
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))  # sorted, and cheaper than np.unique
    if used[-1] >= len(palette):
        return indices
    codes = _packed(palette[used])
    if np.unique(codes).size != used.size:  # colours shared by several indices name no class apiece
        return indices
    for table in tables:
        found, ids = _look_up(codes, table)
        if found.all():
            if np.array_equal(ids, used):
                return indices
            lookup = np.zeros(256, np.uint8)
            lookup[used] = ids
            return lookup[indices]
    return indices


def _keeps_ids(palette: np.ndarray, table: ColourTable) -> bool:
    """Whether every palette entry holding a colour of ``table`` sits at that colour's class id: then whatever
    indices a mask uses, reading them as ids agrees with reading their colours."""
    found, ids = _look_up(_packed(palette), table)
    return bool(np.array_equal(ids[found], np.flatnonzero(found)))


def _read_mask_pixels(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A mask's stored values: HxW ids, or HxWx3 RGB from an RGB or fully opaque RGBA PNG, and a palette image's
    colours (``N x 3``, else None); DataError otherwise."""
    try:
        with open_image(path) as image:
            image.load()
            if image.format in _LOSSY_FORMATS:
                raise DataError(f"{path}: mask is {image.format}-compressed, which turns the class ids along every "
                                "edge into other ids; save masks as PNG")
            if image.mode not in _MASK_MODES | _COLOUR_MODES:
                raise DataError(f"{path}: mask has mode {image.mode}; {_WHAT_MASKS_ARE}")
            pixels = np.asarray(image)
            palette = image.getpalette("RGB") if image.mode == "P" else None
    except FileNotFoundError:
        raise DataError(f"{path}: mask file is missing") from None
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode mask ({one_line(exc)})") from None
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        see_through = int((pixels[..., 3] != 255).sum())
        if see_through:  # a colour blended with what lies behind it names no class
            raise DataError(f"{path}: mask has {see_through} transparent or translucent pixels (mode RGBA); save it "
                            f"opaque: {_WHAT_MASKS_ARE}")
        pixels = pixels[..., :3]
    return pixels, None if palette is None else np.asarray(palette, np.uint8).reshape(-1, 3)


def _colour_ids(rgb: np.ndarray, tables: Sequence[ColourTable], path: Path) -> np.ndarray:
    """Class ids of an HxWx3 RGB mask: by the first table holding every colour in it, else, when each pixel is grey
    (R=G=B), the grey value itself (greyscale ids saved as RGB); DataError naming the colours no table explains."""
    codes, inverse, counts = np.unique(_packed(rgb).ravel(), return_inverse=True, return_counts=True)
    # Tables before greys: VOC's car (128, 128, 128) and a labelmap's white class are grey colours too.
    for table in tables:
        found, ids = _look_up(codes, table)
        if found.all():
            return ids[inverse].reshape(rgb.shape[:2])
    red, green, blue = codes >> 16, (codes >> 8) & 255, codes & 255
    if np.array_equal(red, blue) and np.array_equal(green, blue):
        return blue.astype(np.uint8)[inverse].reshape(rgb.shape[:2])
    unknown = np.flatnonzero(~_look_up(codes, tables[0])[0])
    examples = unknown[np.argsort(-counts[unknown], kind="stable")[:3]]  # the commonest first
    others = f" (nor are all its colours in {' or '.join(t.source for t in tables[1:])})" if len(tables) > 1 else ""
    raise DataError(
        f"{path}: {unknown.size} colour{'s' if unknown.size > 1 else ''} ({int(counts[unknown].sum())} pixels) not in "
        f"{tables[0].source}{others}, "
        f"e.g. RGB {', '.join(str((int(red[k]), int(green[k]), int(blue[k]))) for k in examples)}; {_WHAT_MASKS_ARE}"
    )


def _packed(rgb: np.ndarray) -> np.ndarray:
    """Each RGB colour as one number ``0xRRGGBB``, so colours sort and compare as numbers."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _look_up(codes: np.ndarray, table: ColourTable) -> tuple[np.ndarray, np.ndarray]:
    """For each packed colour in ``codes``: whether ``table`` holds it, and its class id there (0 where not)."""
    keys = _packed(table.colours)
    order = np.argsort(keys)
    at = np.minimum(np.searchsorted(keys[order], codes), len(keys) - 1)
    found = keys[order][at] == codes
    return found, np.where(found, table.ids[order][at], 0).astype(np.uint8)


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
            f"(and {IGNORE_INDEX} = void); masks in another format, or a classes.txt or labelmap.txt at the data "
            f"root that lists too few classes (without one, VOC's 21)?"
        )
