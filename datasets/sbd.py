"""SBD (Hariharan et al., ICCV 2011) to VOC "train_aug": convert ``cls/*.mat`` labels to PNGs and write the id list.

``train_aug`` = VOC train + SBD train + SBD val - VOC val (10,582 ids for the real sets), sorted. Labels of SBD
ids go to ``VOCdevkit/VOC2012/SegmentationClassAug``; the other ids keep VOC's ``SegmentationClass``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import DataError, one_line
from .image_files import check_labels, save_label_png
from .voc import VOC_CLASSES, read_split_ids, split_file, voc_dir

__all__ = ["SbdPlan", "convert_sbd", "plan_sbd", "read_sbd_mat"]


def read_sbd_mat(path: Path) -> np.ndarray:
    """Read an SBD ``cls/<id>.mat`` (struct ``GTcls`` with field ``Segmentation``) as a uint8 HxW class-id mask."""
    import scipy.io  # deferred: only the SBD conversion reads .mat files, and scipy.io is slow to import
    import scipy.io.matlab

    try:
        data = scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=True)
        mask = np.asarray(data["GTcls"].Segmentation)
    except FileNotFoundError:
        raise DataError(f"{path}: SBD label file is missing") from None
    except (KeyError, AttributeError):
        raise DataError(f"{path}: no GTcls.Segmentation inside; is this an SBD cls/*.mat file?") from None
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError) as exc:
        raise DataError(f"{path}: cannot read .mat file ({one_line(exc)})") from None
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise DataError(f"{path}: GTcls.Segmentation is {mask.dtype} of shape {mask.shape}; expected an integer HxW")
    check_labels(mask, len(VOC_CLASSES), path)
    return mask.astype(np.uint8)


def _read_ids(path: Path, what: str) -> list[str]:
    """Read an id list, raising DataError naming the file if it is missing or not UTF-8 text."""
    if not path.is_file():
        raise DataError(f"{path}: {what} id list not found")
    return read_split_ids(path)


@dataclass(frozen=True)
class SbdPlan:
    """What :func:`convert_sbd` will write: the SBD ids of ``train_aug`` (``sbd_ids``), those whose label PNG is
    missing or differs (``labels_to_write``), the ``train_aug`` ids, and the existing files that differ from what
    would be written (``replaced``)."""

    sbd_root: Path
    voc_root: Path
    sbd_ids: tuple[str, ...]
    labels_to_write: tuple[str, ...]
    train_aug: tuple[str, ...]
    replaced: tuple[Path, ...] = ()

    @property
    def train_aug_file(self) -> Path:
        """Where the ``train_aug`` id list goes."""
        return split_file(self.voc_root, "train_aug")

    @property
    def train_aug_text(self) -> str:
        """The ``train_aug`` id list as written: one id a line."""
        return "\n".join(self.train_aug) + "\n"


def plan_sbd(sbd_root: str | Path, voc_root: str | Path) -> SbdPlan:
    """Read the id lists and compare the outputs already there, writing nothing: an existing label PNG with the
    same labels (a re-run) is kept as it is, one that differs (or ``train_aug.txt``) is listed in ``replaced``.

    ``sbd_root`` is SBD's ``benchmark_RELEASE/dataset`` (``cls/``, ``img/``, ``train.txt``, ``val.txt``);
    ``voc_root`` is the data root that holds ``VOCdevkit``.
    """
    sbd_root, voc_root = Path(sbd_root), Path(voc_root)
    voc_train = _read_ids(split_file(voc_root, "train"), "VOC train")
    voc_val = set(_read_ids(split_file(voc_root, "val"), "VOC val"))
    sbd_ids = set(_read_ids(sbd_root / "train.txt", "SBD train")) | set(_read_ids(sbd_root / "val.txt", "SBD val"))
    out_dir = voc_dir(voc_root) / "SegmentationClassAug"
    sbd_ids = sorted(sbd_ids - voc_val)
    _check_sources(sbd_root, voc_root, sbd_ids)
    to_write, replaced = [], []
    for sample_id in sbd_ids:
        png = out_dir / f"{sample_id}.png"
        if png.exists():
            if _same_labels(png, read_sbd_mat(sbd_root / "cls" / f"{sample_id}.mat")):
                continue
            replaced.append(png)
        to_write.append(sample_id)
    plan = SbdPlan(sbd_root, voc_root, tuple(sbd_ids), tuple(to_write), tuple(sorted({*voc_train, *sbd_ids} - voc_val)))
    if plan.train_aug_file.exists() and not _same_bytes(plan.train_aug_file, plan.train_aug_text.encode("utf-8")):
        replaced.append(plan.train_aug_file)
    return dataclasses.replace(plan, replaced=tuple(replaced))


def _check_sources(sbd_root: Path, voc_root: Path, sbd_ids: list[str]) -> None:
    """Refuse SBD ids whose label file is missing, or whose image is in neither ``JPEGImages`` nor SBD's ``img/``,
    before anything is written (the conversion would stop at the first, after writing the labels before it)."""
    images = voc_dir(voc_root) / "JPEGImages"
    labels = [sbd_root / "cls" / f"{i}.mat" for i in sbd_ids]
    no_label = [path for path in labels if not path.is_file()]
    no_image = [(sbd_root / "img" / f"{i}.jpg", images / f"{i}.jpg") for i in sbd_ids]
    no_image = [(source, image) for source, image in no_image if not image.is_file() and not source.is_file()]
    if no_label or no_image:
        first = f"{no_label[0]}: SBD label file is missing" if no_label else _no_image(*no_image[0])
        others = len(no_label) + len(no_image) - 1
        raise DataError(f"{first}{f' (and {others} more SBD files)' if others else ''}; nothing was written")


def _no_image(source: Path, image: Path) -> str:
    """The line for an SBD id whose image is in neither folder."""
    return f"{source}: SBD image missing and {image} does not exist either"


def _same_labels(path: Path, mask: np.ndarray) -> bool:
    """Whether the PNG at ``path`` holds exactly ``mask``'s class ids (an unreadable file does not)."""
    try:
        with Image.open(path) as image:
            return np.array_equal(np.asarray(image), mask)
    except (OSError, ValueError, SyntaxError):
        return False


def _same_bytes(path: Path, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (an unreadable one does not)."""
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def convert_sbd(plan: SbdPlan) -> Path:
    """Write the label PNGs of ``plan`` into ``SegmentationClassAug`` (replacing ``plan.replaced``: the caller
    decides whether that is allowed) and ``train_aug.txt``; returns that file's path. SBD images missing from
    ``JPEGImages`` are copied."""
    base = voc_dir(plan.voc_root)
    out_dir = base / "SegmentationClassAug"
    out_dir.mkdir(exist_ok=True)
    for sample_id in plan.labels_to_write:
        mask = read_sbd_mat(plan.sbd_root / "cls" / f"{sample_id}.mat")
        _write_whole(out_dir / f"{sample_id}.png", lambda tmp: save_label_png(tmp, mask))
    for sample_id in plan.sbd_ids:
        image = base / "JPEGImages" / f"{sample_id}.jpg"
        if not image.is_file():
            source = plan.sbd_root / "img" / f"{sample_id}.jpg"
            if not source.is_file():
                raise DataError(_no_image(source, image))
            _write_whole(image, lambda tmp: shutil.copyfile(source, tmp))
    _write_whole(plan.train_aug_file, lambda tmp: tmp.write_text(plan.train_aug_text, encoding="utf-8"))
    return plan.train_aug_file


def _write_whole(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``: an interrupted conversion leaves
    each output whole or absent, never half a PNG that a re-run would take for the user's own file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # the suffix tells PIL the format
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
