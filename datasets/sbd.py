"""SBD (Hariharan et al., ICCV 2011) to VOC "train_aug": convert ``cls/*.mat`` labels to PNGs and write the id list.

``train_aug`` = VOC train + SBD train + SBD val - VOC val (10,582 ids for the real sets), sorted. Labels of SBD
ids go to ``VOCdevkit/VOC2012/SegmentationClassAug``; the other ids keep VOC's ``SegmentationClass``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .errors import DataError, one_line
from .image_files import check_labels, save_label_png
from .voc import VOC_CLASSES, split_file, voc_dir

__all__ = ["convert_sbd", "read_sbd_mat"]


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
    """Read an id list, raising DataError naming the file if it is missing."""
    if not path.is_file():
        raise DataError(f"{path}: {what} id list not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def convert_sbd(sbd_root: str | Path, voc_root: str | Path) -> Path:
    """Convert SBD labels into ``SegmentationClassAug`` and write ``train_aug.txt``; returns that file's path.

    ``sbd_root`` is SBD's ``benchmark_RELEASE/dataset`` (``cls/``, ``img/``, ``train.txt``, ``val.txt``);
    ``voc_root`` is the data root that holds ``VOCdevkit``. SBD images missing from ``JPEGImages`` are copied.
    """
    sbd_root, voc_root = Path(sbd_root), Path(voc_root)
    voc_train = _read_ids(split_file(voc_root, "train"), "VOC train")
    voc_val = set(_read_ids(split_file(voc_root, "val"), "VOC val"))
    sbd_ids = set(_read_ids(sbd_root / "train.txt", "SBD train")) | set(_read_ids(sbd_root / "val.txt", "SBD val"))
    train_aug = sorted((set(voc_train) | sbd_ids) - voc_val)
    base = voc_dir(voc_root)
    out_dir = base / "SegmentationClassAug"
    out_dir.mkdir(exist_ok=True)
    for sample_id in sorted(sbd_ids - voc_val):
        save_label_png(out_dir / f"{sample_id}.png", read_sbd_mat(sbd_root / "cls" / f"{sample_id}.mat"))
        image = base / "JPEGImages" / f"{sample_id}.jpg"
        if not image.is_file():
            source = sbd_root / "img" / f"{sample_id}.jpg"
            if not source.is_file():
                raise DataError(f"{source}: SBD image missing and {image} does not exist either")
            shutil.copyfile(source, image)
    out = split_file(voc_root, "train_aug")
    out.write_text("\n".join(train_aug) + "\n", encoding="utf-8")
    return out
