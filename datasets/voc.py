"""PASCAL VOC 2012 and VOC-format segmentation folders: class names, loading, checking and downloading.

Layout under a data root ``ROOT``::

    ROOT/classes.txt                      optional; one class name per line, line i = class id i
    ROOT/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    ROOT/VOCdevkit/VOC2012/SegmentationClass/<id>.png      class ids, 255 = void
    ROOT/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   SBD labels (split ``train_aug`` only)
    ROOT/VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt
"""
from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Callable, Sequence

import torch.utils.data

from .errors import DataError, one_line
from .image_files import IGNORE_INDEX, image_size, read_label_png, read_rgb

__all__ = [
    "VOC_CLASSES",
    "VOC_URL",
    "VOCSegmentation",
    "download_voc",
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
    """Class names from ``root/classes.txt`` (line i names class id i), else the 21 VOC classes."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        return list(VOC_CLASSES)
    return read_class_names(path)


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, line i naming class id i; checked non-empty, distinct, at least two and
    few enough."""
    path = Path(path)
    names = [line.strip() for line in read_text_lines(path)]
    while names and not names[-1]:
        names.pop()
    if not names or "" in names:
        raise DataError(f"{path}: needs one non-empty class name per line (line i = class id i)")
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
    returns. Every id's files are checked to exist up front; decoding, sizes and label values when loaded.
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
        self._image_paths = [base / "JPEGImages" / f"{i}.jpg" for i in self.ids]
        _check_files_exist(self._image_paths, "image")
        _check_files_exist(self._mask_paths, "mask")

    @property
    def num_classes(self) -> int:
        """Number of classes (ids 0..num_classes-1; 255 is void)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        """Path of sample ``i``'s JPEG."""
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
        if image.shape[:2] != mask.shape:
            raise DataError(
                f"{self._mask_paths[i]}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{self._image_paths[i].name} is {image.shape[1]}x{image.shape[0]} (WxH)"
            )
        if self.transform is None:
            return image, mask
        return self.transform(image, mask)


def _read_split(root: Path, split: str) -> list[str]:
    """Read a split's ids, with a one-line DataError saying what was looked for and how to get it."""
    base = voc_dir(root)
    if not base.is_dir():
        raise DataError(f"{base}: VOC folder not found under data root {root}; {_missing_voc_hint(root)}")
    path = split_file(root, split)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; {_missing_split_hint(path, split)}")
    ids = [line.strip() for line in read_text_lines(path) if line.strip()]
    if not ids:
        raise DataError(f"{path}: split list is empty")
    return ids


def _missing_voc_hint(root: Path) -> str:
    """How to get the VOC folder: a data root that is the VOC2012 or VOCdevkit folder itself (one or two levels too
    deep) names the folder that holds VOCdevkit; otherwise, where to extract the archive."""
    for inside, levels in ((root / "ImageSets" / "Segmentation", 2), (root / "VOC2012" / "ImageSets", 1)):
        if inside.is_dir():
            folder = root.resolve()
            return f"{root} is the {folder.name} folder itself; the data root is {folder.parents[levels - 1]}"
    return _HOW_TO_GET


def _missing_split_hint(path: Path, split: str) -> str:
    """How to get a missing split file: SBD's train_aug is converted; a folder that holds other splits (a typo, or a
    custom folder) names them; one without any is extracted from the VOC archive."""
    if split == "train_aug":
        return "run tools/convert_sbd.py to make it"
    here = sorted(other.stem for other in path.parent.glob("*.txt")) if path.parent.is_dir() else []
    if not here:
        return _HOW_TO_GET
    return f"the splits there are {', '.join(here[:8])}{', ...' if len(here) > 8 else ''}"


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark from Windows editors is dropped); DataError otherwise."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start}); "
                        "save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None


def _check_files_exist(paths: list[Path], kind: str) -> None:
    """Raise DataError naming the first missing file (and how many are missing) before training starts."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: {kind} file listed in the split is missing{more}")


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
