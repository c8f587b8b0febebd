"""SBD -> train_aug conversion on small .mat files made here, and loading the result."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from datasets import DataError, VOCSegmentation, convert_sbd, plan_sbd

SHAPE = (12, 16)
VOC_TRAIN, VOC_VAL = ["a", "b", "c"], ["d", "e"]
SBD_TRAIN, SBD_VAL = ["b", "f", "d"], ["g", "e", "f"]
EXPECTED = ["a", "b", "c", "f", "g"]  # VOC train + SBD train + SBD val - VOC val, deduplicated, sorted


def _sbd_mask(sample_id: str) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:9, 3:11] = 1 + ord(sample_id) % 20  # a class id per image, so labels can be traced
    return mask


def _write_mat(path: Path, mask: np.ndarray) -> None:
    scipy.io.savemat(path, {"GTcls": {"Segmentation": mask, "Boundaries": np.zeros(1), "CategoriesPresent": 1}})


@pytest.fixture
def roots(tmp_path, make_voc_folder) -> tuple[Path, Path]:
    voc = tmp_path / "data"
    make_voc_folder(voc, {i: np.full(SHAPE, 255, np.uint8) for i in VOC_TRAIN + VOC_VAL}, split="train")
    (voc / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (voc / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text("\n".join(VOC_VAL) + "\n")
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir()
    for sample_id in set(SBD_TRAIN + SBD_VAL):
        _write_mat(sbd / "cls" / f"{sample_id}.mat", _sbd_mask(sample_id))
        Image.fromarray(np.full((*SHAPE, 3), 9, np.uint8)).save(sbd / "img" / f"{sample_id}.jpg")
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return sbd, voc


def test_convert_writes_pngs_and_train_aug(roots):
    sbd, voc = roots
    out = convert_sbd(plan_sbd(sbd, voc))
    base = voc / "VOCdevkit" / "VOC2012"
    assert out == base / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert out.read_text().split("\n") == EXPECTED + [""]
    converted = sorted(p.stem for p in (base / "SegmentationClassAug").glob("*.png"))
    assert converted == ["b", "f", "g"]  # SBD ids in train_aug; VOC val ids are never converted
    for sample_id in converted:
        assert np.array_equal(np.asarray(Image.open(base / "SegmentationClassAug" / f"{sample_id}.png")),
                              _sbd_mask(sample_id))
    assert (base / "JPEGImages" / "f.jpg").is_file() and (base / "JPEGImages" / "g.jpg").is_file()

    ds = VOCSegmentation(voc, split="train_aug")
    assert ds.ids == EXPECTED
    for i, sample_id in enumerate(ds.ids):
        _, mask = ds[i]
        from_sbd = sample_id in SBD_TRAIN + SBD_VAL
        assert ds.mask_path(i).parent.name == ("SegmentationClassAug" if from_sbd else "SegmentationClass")
        assert np.array_equal(mask, _sbd_mask(sample_id) if from_sbd else np.full(SHAPE, 255, np.uint8))


def test_bad_mat_files(roots):
    sbd, voc = roots
    scipy.io.savemat(sbd / "cls" / "f.mat", {"other": np.zeros(SHAPE)})
    with pytest.raises(DataError, match=r"f\.mat: no GTcls"):
        convert_sbd(plan_sbd(sbd, voc))
    _write_mat(sbd / "cls" / "f.mat", np.full(SHAPE, 30, np.uint8))
    with pytest.raises(DataError, match=r"f\.mat: label values \[30\]"):
        convert_sbd(plan_sbd(sbd, voc))
    (sbd / "cls" / "f.mat").write_text("not a mat file")
    with pytest.raises(DataError, match=r"f\.mat: cannot read"):
        convert_sbd(plan_sbd(sbd, voc))
    (sbd / "cls" / "f.mat").unlink()
    with pytest.raises(DataError, match=r"f\.mat: SBD label file is missing"):
        convert_sbd(plan_sbd(sbd, voc))


def test_an_id_list_that_is_not_utf8_is_one_line(roots):
    sbd, voc = roots
    (sbd / "train.txt").write_bytes(b"sb0\n\xe9t\xe9\n")
    with pytest.raises(DataError, match=r"train\.txt: not UTF-8 text \(byte 0xe9 at position 4\)"):
        plan_sbd(sbd, voc)


def test_a_rerun_changes_nothing_and_differing_outputs_are_listed_before_any_write(roots):
    sbd, voc = roots
    first = convert_sbd(plan_sbd(sbd, voc))
    again = plan_sbd(sbd, voc)
    assert again.replaced == () and again.labels_to_write == ()  # identical files: nothing to replace or redo
    labels = voc / "VOCdevkit/VOC2012/SegmentationClassAug"
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(labels / "g.png")  # a label someone changed
    first.write_text("a\nb\n")  # a curated list
    plan = plan_sbd(sbd, voc)
    assert plan.replaced == (labels / "g.png", first) and plan.labels_to_write == ("g",)
    assert first.read_text() == "a\nb\n"  # planning writes nothing
    convert_sbd(plan)
    assert first.read_text().split() == EXPECTED
    assert np.array_equal(np.asarray(Image.open(labels / "g.png")), _sbd_mask("g"))
