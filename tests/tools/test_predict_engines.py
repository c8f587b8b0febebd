"""predict.py's engines: int8 calibrates on --calibration DIR (a bad one is one line), and predict imports only what
the task needs: with a cached engine no torch._dynamo (torchvision pulls it in), no torchvision, timm, ONNX exporter,
NNCF or albumentations; building the engine needs no timm or albumentations."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab import save_checkpoint
from tools import predict

# Runs predict.py's main() as `python tools/predict.py ARGS` would, then lists every module it imported.
PROBE = """
import json, os, runpy, sys
predict = sys.argv[1]
sys.path.insert(0, os.path.dirname(predict))
code = runpy.run_path(predict, run_name="predict")["main"](sys.argv[2:])
print(json.dumps({"rc": code, "modules": sorted(sys.modules)}))
"""
NEVER = ("albumentations", "timm", "nncf", "scipy", "matplotlib", "segmentation_models_pytorch")
NOT_WHEN_CACHED = NEVER + ("torch._dynamo", "torchvision", "onnx", "torch.onnx", "deeplab.models", "deeplab.evaluation",
                           "backbones.mobilenetv2")


def imported_by_predict(repo_root: Path, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(repo_root / "tools" / "predict.py"), *args],
                          capture_output=True, text=True, timeout=600, check=True)
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["rc"] == 0, done.stderr
    return set(report["modules"])


@pytest.mark.slow
def test_cached_prediction_skips_heavy_imports(tmp_path: Path, repo_root: Path, make_checkpoint) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=3)
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "mean": list(model.mean),
                     "std": list(model.std)}, tmp_path / "m.pt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    args = (str(tmp_path / "a.jpg"), "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "out"))
    building = imported_by_predict(repo_root, *args)
    assert "deeplab.models" in building  # the first run built and exported the model...
    assert not building & set(NEVER)
    cached = imported_by_predict(repo_root, *args[:-1], str(tmp_path / "again"))
    assert not cached & set(NOT_WHEN_CACHED)  # ...the second loaded the cached engine alone
    assert (tmp_path / "again" / "a_mask.png").is_file()


def test_auto_says_which_engine_it_runs_and_why(tmp_path: Path, make_checkpoint, capsys) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=2)  # no run arguments: no validation images to check on
    Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(tmp_path / "a.png")
    assert predict.main([str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "m.pt"), "--out",
                         str(tmp_path / "out"), "--device", "cpu"]) == 0  # auto's CPU choice
    assert ("engine auto -> onnxruntime (exact fp32: no validation images to check a faster engine on; the "
            "checkpoint names no validation data (not written by train.py here))\n") in capsys.readouterr().out


def test_bad_calibration_folder_is_one_line(tmp_path: Path, make_checkpoint, capsys) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    for folder, problem in (("missing", "no such file or folder"), ("empty", "folder holds no images")):
        rc = predict.main([str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "m.pt"), "--engine", "int8",
                           "--calibration", str(tmp_path / folder), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert rc == 2 and err.strip() == f"error: --calibration: {tmp_path / folder}: {problem}"


def test_calibration_skips_the_masks_and_overlays_predict_wrote_there(tmp_path: Path, make_checkpoint, capsys) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(photos / "a.png")
    args = ["--checkpoint", str(tmp_path / "m.pt"), "--engine", "int8", "--calibration", str(photos), "--device", "cpu"]
    assert predict.main([str(photos / "a.png"), *args[:2], "--engine", "torch", "--out", str(photos)]) == 0
    capsys.readouterr()
    assert predict.main([str(photos / "a.png"), *args, "--out", str(tmp_path / "out")]) == 0
    assert "calibrating int8 on 1 images from --calibration" in capsys.readouterr().err
    (photos / "a.png").rename(tmp_path / "a.png")
    assert predict.main([str(tmp_path / "a.png"), *args, "--out", str(tmp_path / "again")]) == 2
    assert capsys.readouterr().err.endswith(f"error: --calibration: {photos}: holds only masks and overlays that "
                                            "predict.py wrote\n")


@pytest.mark.slow
def test_openvino_int8_calibrates_on_the_named_folder(tmp_path: Path, make_checkpoint, capsys) -> None:
    pytest.importorskip("nncf", reason="openvino-int8 needs NNCF (pip install -e '.[dev]')")
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    (tmp_path / "calib").mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 34, 3), dtype=np.uint8)).save(
            tmp_path / "calib" / f"{i}.png")
    Image.fromarray(np.zeros((21, 25, 3), np.uint8)).save(tmp_path / "a.png")
    args = [str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "m.pt"), "--engine", "openvino-int8",
            "--calibration", str(tmp_path / "calib"), "--out", str(tmp_path / "out")]
    assert predict.main(args) == 0
    assert "calibrating openvino-int8 on 3 images from --calibration" in capsys.readouterr().err
    assert predict.main([*args[:-1], str(tmp_path / "again")]) == 0
    assert "calibrating" not in capsys.readouterr().err  # the calibrated model was cached
    assert Image.open(tmp_path / "again" / "a_mask.png").size == (25, 21)


@pytest.mark.slow
def test_script_exit_status_and_output_survive_the_fast_exit(tmp_path: Path, repo_root: Path, make_checkpoint) -> None:
    """predict.py ends with os._exit (skipping torch's teardown): its files, printed lines and status must not suffer."""
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    Image.fromarray(np.zeros((9, 11, 3), np.uint8)).save(tmp_path / "a.png")
    done = subprocess.run([sys.executable, str(repo_root / "tools" / "predict.py"), str(tmp_path / "a.png"),
                           str(tmp_path / "missing.png"), "--checkpoint", str(tmp_path / "m.pt"), "--engine", "torch",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith(f"1 of 1 images segmented; results in {tmp_path / 'out'}")
    assert "missing.png: no such file or folder" in done.stderr
    assert Image.open(tmp_path / "out" / "a_mask.png").size == (11, 9)
