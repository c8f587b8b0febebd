"""PASCAL VOC 2012 and VOC-format segmentation folders: class names, loading, checking and downloading.

Layout under a data root ``ROOT``::

    ROOT/classes.txt                      optional; one class name per line, line i = class id i
    ROOT/labelmap.txt                     optional; CVAT's ``name:r,g,b::`` lines: class names and RGB mask colours
    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg             or another image type: <id>.png, <id>.JPG...
    ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png      class ids, 255 = void (or RGB colours: see read_label_png)
    ROOT/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   SBD labels (split ``train_aug`` only)
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt
"""
from __future__ import annotations

import glob
import re
import urllib.error
from pathlib import Path, PureWindowsPath
from typing import Callable, Sequence

import numpy as np
import torch.utils.data

from .errors import DataError, one_line, shorten
from .image_files import (
    IGNORE_INDEX,
    IMAGE_SUFFIXES,
    ColourTable,
    image_size,
    is_turned,
    read_label_png,
    read_rgb,
    voc_colour_table,
)

__all__ = [
    "CLASS_FILES",
    "LABELMAP_FILE",
    "VOC_CLASSES",
    "VOC_URL",
    "VOCSegmentation",
    "download_voc",
    "find_image",
    "load_class_names",
    "load_mask_colours",
    "read_class_names",
    "read_labelmap",
    "read_split_ids",
    "read_text_lines",
    "split_file",
    "voc_dir",
]

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
#: CVAT's (Datumaro's) class list at the root of its "Segmentation mask" / PASCAL VOC export.
LABELMAP_FILE = "labelmap.txt"
#: The class files at the data root, in the order they name the classes, and what each gives (for messages).
CLASS_FILES = {"classes.txt": "class names", LABELMAP_FILE: "class names and mask colours"}
# A labelmap line: name, colour, then optional parts and actions (which segmentation does not use).
_LABELMAP_LINE = re.compile(r"(?P<name>[^:]+):(?P<colour>[^:]*)(:[^:]*){0,2}")
_HOW_TO_GET = (
    f"extract {VOC_URL} so that the folder VOCdevkit sits inside the data root (tools/train.py --download does that)"
)


def voc_dir(root: str | Path) -> Path:
    """The ``VOCdevkit/VOC2012`` folder under a data root; one place that knows the layout."""
    return Path(root) / "VOCdevkit" / "VOC2012"


def split_file(root: str | Path, split: str) -> Path:
    """The id list of ``split`` under a data root."""
    return _splits_dir(root) / f"{split}.txt"


def _splits_dir(root: str | Path) -> Path:
    """The folder of the split files under a data root."""
    return voc_dir(root) / "ImageSets" / "Segmentation"


def load_class_names(root: str | Path) -> list[str]:
    """Class names from ``root/classes.txt`` (line i names class id i), else from ``root/labelmap.txt``, else the 21
    VOC classes; both files must agree. A missing ``root`` is a DataError (moved or mistyped), not VOC's classes."""
    root = Path(root)
    if not root.is_dir():
        raise _voc_dir_missing(root)
    classes, labelmap = _class_file(root, "classes.txt"), _class_file(root, LABELMAP_FILE)
    names = read_class_names(classes) if classes else None
    mapped = read_labelmap(labelmap)[0] if labelmap else None
    if names and mapped and names != mapped:
        raise DataError(f"{classes}: {_disagreement(names, mapped)} {labelmap}; keep one file, or make them agree")
    return names or mapped or list(VOC_CLASSES)


def load_mask_colours(root: str | Path) -> ColourTable:
    """The colours RGB masks under ``root`` use: ``root/labelmap.txt``'s when there is one, else the VOC palette."""
    labelmap = _class_file(Path(root), LABELMAP_FILE)
    return read_labelmap(labelmap)[1] if labelmap else voc_colour_table()


def _class_file(root: Path, name: str) -> Path | None:
    """``root/name`` when it is there, None when not; DataError when it is no file, or lies inside ``VOCdevkit`` or
    ``VOC2012`` instead of beside ``VOCdevkit``: read from nowhere, VOC's classes would stand in for the user's."""
    path = root / name
    if path.exists() or path.is_symlink():
        if not path.is_file():  # a folder (or a dangling link) there must not mean VOC's classes
            raise DataError(f"{path}: is not a file; it must list the {CLASS_FILES[name]}, one class a line "
                            "(line i = class id i)")
        return path
    for misplaced in (root / "VOCdevkit" / name, voc_dir(root) / name):
        if misplaced.is_file():
            raise DataError(f"{misplaced}: {CLASS_FILES[name]} are read from {path} (beside VOCdevkit), not from "
                            "here; move the file there")
    return None


def _disagreement(names: list[str], mapped: list[str]) -> str:
    """How two class lists differ, as the middle of a sentence naming the first file, then the second."""
    if len(names) != len(mapped):
        return f"names {len(names)} classes but {len(mapped)} in"
    first = next(i for i, (a, b) in enumerate(zip(names, mapped)) if a != b)
    return f"names class {first} {names[first]!r} but it is {mapped[first]!r} in"


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, line i naming class id i; checked non-empty, no comments, distinct, at
    least two and few enough."""
    path = Path(path)
    names = [line.strip() for line in read_text_lines(path)]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"{path}: names no class; it needs one class name per line (line i = class id i)")
    if "" in names:  # skipped, it would shift every class after it to the previous id
        raise DataError(f"{path}: line {names.index('') + 1} is blank; the file needs one class name on each line "
                        "(line i = class id i), blank lines only at its end")
    comments = [n for n, name in enumerate(names, 1) if name.startswith("#")]
    if comments:  # taken as a class name, it would shift every class after it to the next id
        raise DataError(f"{path}: line {comments[0]} ({names[comments[0] - 1]!r}) reads as a comment; the file holds "
                        "class names only, line i = class id i")
    _refuse_numbered_names(path, names)
    _check_class_count(path, names)
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return names


def _refuse_numbered_names(path: Path, names: list[str]) -> None:
    """Refuse names that each start with their own id (``0 background``, ``1: cat``, as other tools write class
    lists): the numbers would become part of every name, which then matches no other tool's."""
    numbers = [re.match(r"(\d+)[\s:,]+\S", name) for name in names]
    if not all(numbers):
        return
    ids = [int(number.group(1)) for number in numbers]
    if ids in (list(range(len(names))), list(range(1, len(names) + 1))):
        raise DataError(f"{path}: every line starts with its id (line 1: {names[0]!r}); the file holds the names "
                        "alone, line i = class id i")


def _check_class_count(path: Path, names: list[str]) -> None:
    """Refuse a class list that segmentation cannot use: one class only, or more than uint8 masks hold."""
    if len(names) == 1:
        # One class gives a softmax of 1 everywhere: loss 0 and mIoU 1.0 whatever the model does.
        raise DataError(f"{path}: names one class ({names[0]}); segmentation needs at least two, e.g. background "
                        "and the object")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"{path}: {len(names)} classes; at most {IGNORE_INDEX} fit uint8 masks with 255 = void")


def read_labelmap(path: str | Path) -> tuple[list[str], ColourTable]:
    """Class names and RGB mask colours from a CVAT/Datumaro ``labelmap.txt``: after its ``#`` header, one
    ``name:r,g,b:parts:actions`` line per class (parts and actions may be empty or left out), line order = class id."""
    path = Path(path)
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    where: dict[object, int] = {}  # each name and colour -> the line that gave it
    for number, line in enumerate(read_text_lines(path), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, colour = _labelmap_entry(text, f"{path}: line {number}")
        for key, what in ((name, f"class name {name!r}"), (colour, f"colour {colour} of {name!r}")):
            if key in where:
                raise DataError(f"{path}: line {number}: {what} is already on line {where[key]}; each class needs "
                                "its own name and colour")
            where[key] = number
        names.append(name)
        colours.append(colour)
    if not names:
        raise DataError(f"{path}: lists no classes; it needs one name:r,g,b:: line per class (line order = class id)")
    _check_class_count(path, names)
    return names, ColourTable(np.array(colours, np.uint8), np.arange(len(names), dtype=np.uint8), f"{path}'s colours")


def _labelmap_entry(text: str, where: str) -> tuple[str, tuple[int, int, int]]:
    """The name and colour of one labelmap line, or a DataError starting with ``where`` (the file and line)."""
    match = _LABELMAP_LINE.fullmatch(text)
    if match is None or not match["name"].strip():
        raise DataError(f"{where} ({shorten(text, 60)!r}) is not name:r,g,b:parts:actions (e.g. cat:255,0,0::)")
    parts = match["colour"].split(",")
    if len(parts) != 3 or not all(part.strip().isdigit() for part in parts):
        raise DataError(f"{where}: colour {match['colour']!r} of {match['name'].strip()!r} is not r,g,b (three whole "
                        "numbers 0..255, e.g. 255,0,0)")
    colour = tuple(int(part) for part in parts)
    if max(colour) > 255:
        raise DataError(f"{where}: colour {match['colour']!r} of {match['name'].strip()!r} has a component above 255")
    return match["name"].strip(), colour


class VOCSegmentation(torch.utils.data.Dataset):
    """PASCAL VOC 2012 segmentation (Everingham et al., IJCV 2010) or any folder in its layout.

    Items are ``(image, mask)``: uint8 HxWx3 RGB and uint8 HxW class ids, or what ``transform(image, mask)``
    returns. Every id's files are checked to exist up front; decoding, sizes and label values when loaded (or, for
    the masks, by :meth:`mask_pixels`). RGB masks are decoded by ``colours``: the root's labelmap.txt, else the VOC
    palette.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        split: str = "train",
        transform: Callable | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        if isinstance(class_names, (str, Path)):  # list() of it would give one class per letter
            raise TypeError(f"class_names: a sequence of names, not {class_names!r}; read a file of them with "
                            "read_class_names(path)")
        self.class_names = list(class_names) if class_names is not None else load_class_names(self.root)
        self.colours = load_mask_colours(self.root)
        self.ids = _read_split(self.root, split)
        base = voc_dir(self.root)
        aug_dir = base / "SegmentationClassAug"
        # train_aug mixes SBD labels (converted into SegmentationClassAug) with VOC's own for the other ids.
        self._mask_paths = [
            aug_dir / f"{i}.png" if split == "train_aug" and (aug_dir / f"{i}.png").is_file()
            else base / "SegmentationClass" / f"{i}.png"
            for i in self.ids
        ]
        self._image_paths = [find_image(base / "JPEGImages", i) for i in self.ids]
        _check_files_exist(self._image_paths, "image")
        _check_files_exist(self._mask_paths, "mask")

    @property
    def num_classes(self) -> int:
        """Number of classes (ids 0..num_classes-1; 255 is void)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        """Path of sample ``i``'s image."""
        return self._image_paths[i]

    def mask_path(self, i: int) -> Path:
        """Path of sample ``i``'s label PNG."""
        return self._mask_paths[i]

    def image_size(self, i: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``i``, read from the image's header (no decoding)."""
        return image_size(self._image_paths[i])

    def __getitem__(self, i: int):
        image = read_rgb(self._image_paths[i])
        mask = self.read_mask(i)
        self._check_size(i, mask.shape, image.shape[:2])
        if self.transform is None:
            return image, mask
        return self.transform(image, mask)

    def read_mask(self, i: int) -> np.ndarray:
        """Sample ``i``'s class ids (uint8 HxW), RGB masks decoded by the data's colours, labels checked."""
        return read_label_png(self._mask_paths[i], self.num_classes, (self.colours,))

    def read_sized_mask(self, i: int) -> np.ndarray:
        """:meth:`read_mask`, checked against its image's size read from the header (no image decoded): a mask
        that does not fit its image is named as such, not blamed on what it is compared with."""
        mask = self.read_mask(i)
        self._check_size(i, mask.shape, self.image_size(i))
        return mask

    def mask_pixels(self, i: int) -> np.ndarray:
        """Pixels of each class in mask ``i``, checked against its image's size: counting a split this way finds a
        bad mask before a run trains, not when it first loads it."""
        return np.bincount(self.read_sized_mask(i).ravel(), minlength=IGNORE_INDEX + 1)[: self.num_classes]

    def _check_size(self, i: int, mask_size: tuple[int, ...], image_size: tuple[int, ...]) -> None:
        """Raise DataError naming sample ``i``'s mask when it is not its image's ``(height, width)``."""
        if tuple(image_size) != tuple(mask_size):
            turned = tuple(image_size) == tuple(mask_size)[::-1] and is_turned(self._image_paths[i])
            hint = "; its EXIF orientation turns the photo when shown, and masks follow it as shown" if turned else ""
            raise DataError(
                f"{self._mask_paths[i]}: mask is {mask_size[1]}x{mask_size[0]} but its image "
                f"{self._image_paths[i].name} is {image_size[1]}x{image_size[0]} (WxH){hint}"
            )


def _read_split(root: Path, split: str) -> list[str]:
    """Read a split's ids, with a one-line DataError saying what was looked for and how to get it."""
    base = voc_dir(root)
    if not base.is_dir():
        raise _voc_dir_missing(root)
    path = split_file(root, split)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; {_split_hint(_splits_dir(root), split)}")
    ids = read_split_ids(path)
    if not ids:
        raise DataError(f"{path}: split list is empty")
    return ids


def _split_hint(folder: Path, split: str) -> str:
    """How to get a missing split: SBD's conversion, its name where its file's name or path was given, the splits
    there are (a custom folder lacks VOC's val), else VOC's download."""
    if split == "train_aug":
        return "run tools/convert_sbd.py to make it"
    if PureWindowsPath(split).name != split or split.endswith(".txt"):  # the split's file named, or its path
        return (f"--split and --val-split take a split's name, the stem of its file in {folder} (--split "
                f"{PureWindowsPath(split).stem})")
    present = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    if not present:
        return _HOW_TO_GET
    return (f"the folder holds {', '.join(present)}: write {split}.txt (one image id a line) or name one of those "
            "(--split, --val-split)")


def _voc_dir_missing(root: Path) -> DataError:
    """The error for a data root without ``VOCdevkit/VOC2012``, saying what to pass or do instead."""
    return DataError(f"{voc_dir(root)}: VOC folder not found under data root {root}; {_layout_hint(root)}")


def _layout_hint(root: Path) -> str:
    """What to do when ``root`` holds no ``VOCdevkit/VOC2012``: name the data root when ``root`` is a level too
    deep (the VOC folder itself, or ``VOCdevkit``), show the layout for loose folders, else how to get VOC."""
    if root.name == "VOCdevkit" and (root / "VOC2012").is_dir():
        return f"the data root is the folder holding VOCdevkit: pass --data-root {root.parent}"
    if (root / "JPEGImages").is_dir():
        if root.name == "VOC2012" and root.parent.name == "VOCdevkit":
            return f"the data root is the folder holding VOCdevkit: pass --data-root {root.parent.parent}"
        return f"move JPEGImages, SegmentationClass and ImageSets into {voc_dir(root)}"
    return _HOW_TO_GET


def read_split_ids(path: Path) -> list[str]:
    """The ids a split file lists, in order and with repeats: one a line, blank lines and surrounding spaces (a
    Windows editor's CRLF and byte-order mark too) dropped; DataError when it cannot be read."""
    return [line.strip() for line in read_text_lines(path) if line.strip()]


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark from Windows editors is dropped); DataError otherwise."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start}); "
                        "save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None


def find_image(folder: Path, sample_id: str) -> Path:
    """``<id>.jpg`` as VOC names it, else the image of another type with that stem (PNG photos, a camera's .JPG); the
    ``.jpg`` path when there is none, for the missing-file error."""
    path = folder / f"{sample_id}.jpg"
    if path.is_file():
        return path
    for suffix in IMAGE_SUFFIXES:
        for other in (folder / f"{sample_id}{suffix}", folder / f"{sample_id}{suffix.upper()}"):
            if other.is_file():
                return other
    return path


def _check_files_exist(paths: list[Path], kind: str) -> None:
    """Raise DataError naming the first missing file (and how many are missing) and how to fix it, before training
    starts."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        hint = _missing_hint(missing[0], kind)
        raise DataError(f"{missing[0]}: {kind} file listed in the split is missing{more}{hint}")


def _missing_hint(path: Path, kind: str) -> str:
    """How to fix a missing file: an id listed with its image's extension drops it; a file of that id that is not
    read (a mask saved as ``a.PNG`` or ``a.jpg``, a phone's ``a.HEIC`` photo) is named, with what is read instead."""
    sample_id = Path(path.stem)
    if sample_id.suffix.lower() in IMAGE_SUFFIXES:
        return f"; list ids without their extension ({sample_id.stem}, not {sample_id})"
    others = sorted(p.name for p in path.parent.glob(f"{glob.escape(path.stem)}.*"))
    if not others:
        return ""
    read = "PNG files named <id>.png" if kind == "mask" else f"<id> with one of {', '.join(IMAGE_SUFFIXES)}"
    return f"; the folder holds {others[0]}, but {kind}s are read from {read}"


def download_voc(root: str | Path) -> None:
    """Download and extract VOC 2012 trainval into ``root/VOCdevkit/VOC2012`` unless it is already there."""
    if split_file(root, "train").is_file():
        return
    import torchvision.datasets  # deferred: only the download path needs it

    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        torchvision.datasets.VOCSegmentation(str(root), year="2012", image_set="trainval", download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise DataError(
            f"{root}: could not download VOC 2012 ({one_line(exc)}); on a connected machine fetch {VOC_URL} "
            f"and extract it into {root} so that {voc_dir(root)} exists"
        ) from None
