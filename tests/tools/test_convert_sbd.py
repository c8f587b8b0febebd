"""tools/convert_sbd.py: converts an SBD folder and reports the id count; a missing folder, a list that is not
UTF-8 and existing files that differ from the output are one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from tools import convert_sbd


def _folders(tmp_path, make_voc_folder):
    """A VOC folder (train a, val b) and an SBD folder (train c, val b); returns (sbd, voc, VOC2012 folder)."""
    voc = tmp_path / "data"
    base = make_voc_folder(voc, {"a": np.zeros((6, 8), np.uint8), "b": np.zeros((6, 8), np.uint8)})
    (base / "ImageSets/Segmentation/val.txt").write_text("b\n")
    sbd = tmp_path / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir()
    scipy.io.savemat(sbd / "cls" / "c.mat", {"GTcls": {"Segmentation": np.ones((6, 8), np.uint8)}})
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(sbd / "img" / "c.jpg")
    (sbd / "train.txt").write_text("c\n")
    (sbd / "val.txt").write_text("b\n")
    return sbd, voc, base


def test_converts_and_reports(tmp_path, make_voc_folder, capsys):
    sbd, voc, base = _folders(tmp_path, make_voc_folder)
    assert convert_sbd.main(["--sbd-root", str(sbd), "--data-root", str(voc)]) == 0
    assert "(2 ids)" in capsys.readouterr().out  # a (VOC train) + c (SBD); b is VOC val
    assert (base / "ImageSets/Segmentation/train_aug.txt").read_text().split() == ["a", "c"]
    assert convert_sbd.main(["--sbd-root", str(tmp_path / "missing"), "--data-root", str(voc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and len(err.strip().splitlines()) == 1


def test_a_list_that_is_not_utf8_is_one_line(tmp_path, make_voc_folder, capsys):
    sbd, voc, _ = _folders(tmp_path, make_voc_folder)
    (sbd / "train.txt").write_bytes(b"sb0\n\xe9t\xe9\n")
    assert convert_sbd.main(["--sbd-root", str(sbd), "--data-root", str(voc)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.txt: not UTF-8 text" in err


def test_differing_files_are_kept_unless_overwrite(tmp_path, make_voc_folder, capsys):
    sbd, voc, base = _folders(tmp_path, make_voc_folder)
    args = ["--sbd-root", str(sbd), "--data-root", str(voc)]
    assert convert_sbd.main(args) == 0 and convert_sbd.main(args) == 0  # a re-run finds identical files
    train_aug, label = base / "ImageSets/Segmentation/train_aug.txt", base / "SegmentationClassAug/c.png"
    train_aug.write_text("a\n")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(label)
    capsys.readouterr()
    assert convert_sbd.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {label}: exists") and "(and 1 more)" in err
    assert train_aug.read_text() == "a\n" and not np.asarray(Image.open(label)).any()  # refused before any write
    assert convert_sbd.main([*args, "--overwrite"]) == 0
    assert train_aug.read_text().split() == ["a", "c"] and np.asarray(Image.open(label)).all()


def test_an_interrupted_conversion_leaves_no_half_written_label(tmp_path, make_voc_folder, monkeypatch):
    sbd, voc, base = _folders(tmp_path, make_voc_folder)
    args = ["--sbd-root", str(sbd), "--data-root", str(voc)]

    def interrupted(path, mask):
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")  # the first bytes, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr("datasets.sbd.save_label_png", interrupted)
    assert convert_sbd.main(args) == 130
    assert not any((base / "SegmentationClassAug").iterdir())
    monkeypatch.undo()
    assert convert_sbd.main(args) == 0  # no --overwrite needed: nothing of the user's is replaced
    assert np.asarray(Image.open(base / "SegmentationClassAug" / "c.png")).all()


def test_missing_sbd_files_are_one_line_before_anything_is_written(tmp_path, make_voc_folder, capsys):
    sbd, voc, base = _folders(tmp_path, make_voc_folder)
    (sbd / "train.txt").write_text("c\nd\n")  # d: neither its label nor its image was unpacked
    assert convert_sbd.main(["--sbd-root", str(sbd), "--data-root", str(voc)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {sbd / 'cls' / 'd.mat'}: SBD label file is missing (and 1 more SBD files); "
                   "nothing was written")
    assert not (base / "SegmentationClassAug").exists() and not (base / "ImageSets/Segmentation/train_aug.txt").exists()
