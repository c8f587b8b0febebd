"""Every backbone added beside the MobileNets, ShuffleNetV2 and Xception, end to end through the tools: train a few
steps on the demo data, evaluate, predict an odd-sized image with ONNX Runtime (the same mask as PyTorch's) and
export with parity at an odd size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backbones import list_backbones, smallest_training_crop
from datasets import build_eval_transform
from datasets.voc import split_file
from deeplab.checkpoint import load_checkpoint, model_from_checkpoint
from deeplab.inference import create_engine
from tools import eval as eval_tool
from tools import export as export_tool
from tools import predict
from tools import train as train_tool


NAMES = [name for name in list_backbones() if name.startswith(("blazenet", "inception", "mobilenetv4", "mobilevit",
                                                                 "shufflenetv1"))]


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> Path:
    split_file(demo_root, "val1").write_text("val_0000\n")
    return demo_root


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_train_eval_predict_export(name: str, demo: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    crop = max(32, smallest_training_crop(name, 16))  # the hybrid MobileNetV4s need 33
    assert train_tool.main([
        "--dataset", "demo", "--data-root", str(demo), "--val-split", "val1", "--backbone", name, "--iters", "2",
        "--val-every", "2", "--crop-size", str(crop), "--batch-size", "2", "--workers", "0", "--no-progress",
        "--out", str(run)]) == 0
    best = run / "best.pt"
    assert load_checkpoint(best)["model_config"]["backbone"] == name

    assert eval_tool.main(["--checkpoint", str(best), "--data-root", str(demo), "--split", "val1",
                           "--workers", "0", "--engine", "onnxruntime"]) == 0
    assert "miou" in capsys.readouterr().out.lower()

    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    assert predict.main([str(tmp_path / "photo.png"), "--checkpoint", str(best), "--out", str(tmp_path / "pred"),
                         "--engine", "onnxruntime"]) == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "photo_mask.png"))
    model = model_from_checkpoint(load_checkpoint(best), best).eval()
    tensor, _ = build_eval_transform(mean=model.mean, std=model.std)(image, np.zeros((37, 45), np.uint8))
    with torch.no_grad():
        expected = create_engine(model, engine="torch")(tensor[None]).argmax(1)[0].numpy()
    assert mask.shape == (37, 45) and (mask == expected).mean() > 0.99

    capsys.readouterr()
    assert export_tool.main(["--checkpoint", str(best), "--out", str(tmp_path / "model.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "parity on 1x3x97x131" in printed
    assert float(printed.split("argmax agreement ")[1].split("%")[0]) >= 99.9
