"""tools/convert_sbd.py: converts an SBD folder and reports the id count; a missing folder is one line."""
from __future__ import annotations

import numpy as np
import scipy.io
from PIL import Image

from tools import convert_sbd


def test_converts_and_reports(tmp_path, make_voc_folder, capsys):
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
    assert convert_sbd.main(["--sbd-root", str(sbd), "--data-root", str(voc)]) == 0
    assert "(2 ids)" in capsys.readouterr().out  # a (VOC train) + c (SBD); b is VOC val
    assert (base / "ImageSets/Segmentation/train_aug.txt").read_text().split() == ["a", "c"]
    assert convert_sbd.main(["--sbd-root", str(tmp_path / "missing"), "--data-root", str(voc)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and len(err.strip().splitlines()) == 1
