"""PASCAL VOC 2012 and VOC-format segmentation folders: class names, loading, checking and downloading.

Layout under a data root ``ROOT``::

    ROOT/classes.txt                      optional; one class name per line, line i = class id i
    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg             or another image type: <id>.png, <id>.JPG...
    ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png      class ids, 255 = void
    ROOT/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   SBD labels (split ``train_aug`` only)
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt
"""
from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch.utils.data

from .errors import DataError, one_line
from .image_files import IGNORE_INDEX, IMAGE_SUFFIXES, image_size, is_turned, read_label_png, read_rgb

__all__ = [
    "VOC_CLASSES",
    "VOC_URL",
    "VOCSegmentation",
    "download_voc",
    "find_image",
    "load_class_names",
    "read_class_names",
    "read_text_lines",
    "split_file",
    "voc_dir",
]

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_HOW_TO_GET = (
    f"extract {VOC_URL} so that the folder VOCdevkit sits inside the data root (tools/train.py --download does that)"
)


def voc_dir(root: str | Path) -> Path:
    """The ``VOCdevkit/VOC2012`` folder under a data root; one place that knows the layout."""
    return Path(root) / "VOCdevkit" / "VOC2012"


def split_file(root: str | Path, split: str) -> Path:
    """The id list of ``split`` under a data root."""
    return voc_dir(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def load_class_names(root: str | Path) -> list[str]:
    """Class names from ``root/classes.txt`` (line i names class id i), else the 21 VOC classes; a missing ``root``
    is a DataError (moved or mistyped), not VOC's classes."""
    path = Path(root) / "classes.txt"
    if not path.exists() and not path.is_symlink():
        if not Path(root).is_dir():
            raise _voc_dir_missing(Path(root))
        _refuse_misplaced_classes_file(Path(root))
        return list(VOC_CLASSES)
    if not path.is_file():  # a folder (or a dangling link) there must not mean VOC's classes
        raise DataError(f"{path}: is not a file; it must list the class names, one a line (line i = class id i)")
    return read_class_names(path)


def _refuse_misplaced_classes_file(root: Path) -> None:
    """Refuse a ``classes.txt`` put inside ``VOCdevkit`` or ``VOC2012`` instead of beside ``VOCdevkit``: read from
    nowhere, it would leave VOC's 21 classes standing in for the user's, without a word."""
    for misplaced in (root / "VOCdevkit" / "classes.txt", voc_dir(root) / "classes.txt"):
        if misplaced.is_file():
            raise DataError(f"{misplaced}: class names are read from {root / 'classes.txt'} (beside VOCdevkit), "
                            "not from here; move the file there")


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, line i naming class id i; checked non-empty, no comments, distinct, at
    least two and few enough."""
    path = Path(path)
    names = [line.strip() for line in read_text_lines(path)]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise DataError(f"{path}: needs one non-empty class name per line (line i = class id i)")
    comments = [n for n, name in enumerate(names, 1) if name.startswith("#")]
    if comments:  # taken as a class name, it would shift every class after it to the next id
        raise DataError(f"{path}: line {comments[0]} ({names[comments[0] - 1]!r}) reads as a comment; the file holds "
                        "class names only, line i = class id i")
    if len(names) == 1:
        # One class gives a softmax of 1 everywhere: loss 0 and mIoU 1.0 whatever the model does.
        raise DataError(f"{path}: names one class ({names[0]}); segmentation needs at least two, e.g. background "
                        "and the object")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: class names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"{path}: {len(names)} classes; at most {IGNORE_INDEX} fit uint8 masks with 255 = void")
    return names


class VOCSegmentation(torch.utils.data.Dataset):
    """PASCAL VOC 2012 segmentation (Everingham et al., IJCV 2010) or any folder in its layout.

    Items are ``(image, mask)``: uint8 HxWx3 RGB and uint8 HxW class ids, or what ``transform(image, mask)``
    returns. Every id's files are checked to exist up front; decoding, sizes and label values when loaded (or, for
    the masks, by :meth:`mask_pixels`).
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
        self.class_names = list(class_names) if class_names is not None else load_class_names(self.root)
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
        mask = read_label_png(self._mask_paths[i], self.num_classes)
        self._check_size(i, mask.shape, image.shape[:2])
        if self.transform is None:
            return image, mask
        return self.transform(image, mask)

    def mask_pixels(self, i: int) -> np.ndarray:
        """Pixels of each class in mask ``i``, decoded and checked against its image's size (read from the header):
        counting a split this way finds a bad mask before a run trains, not when it first loads it."""
        mask = read_label_png(self._mask_paths[i], self.num_classes)
        self._check_size(i, mask.shape, self.image_size(i))
        return np.bincount(mask.ravel(), minlength=IGNORE_INDEX + 1)[: self.num_classes]

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
        raise DataError(f"{path}: split file not found; {_split_hint(path.parent, split)}")
    ids = [line.strip() for line in read_text_lines(path) if line.strip()]
    if not ids:
        raise DataError(f"{path}: split list is empty")
    return ids


def _split_hint(folder: Path, split: str) -> str:
    """How to get a missing split: SBD's conversion, the splits there are (a custom folder lacks VOC's val), else
    VOC's download."""
    if split == "train_aug":
        return "run tools/convert_sbd.py to make it"
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
    """Raise DataError naming the first missing file (and how many are missing) before training starts; an id
    listed with its image's extension is told to drop it."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        sample_id = Path(missing[0].stem)
        hint = (f"; list ids without their extension ({sample_id.stem}, not {sample_id})"
                if sample_id.suffix.lower() in IMAGE_SUFFIXES else "")
        raise DataError(f"{missing[0]}: {kind} file listed in the split is missing{more}{hint}")


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
