"""CUDA paths, where a GPU is (skipped elsewhere): the fp32 engine computes in full fp32, the fp16 one stays close,
and a run trains under each autocast dtype, resumes, evaluates and predicts on the GPU."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from datasets.voc import split_file
from deeplab import DeepLabV3Plus
from deeplab.inference import create_engine
from tools import eval as eval_tool
from tools import predict as predict_tool
from tools import train as train_tool

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model_and_logits(randomise_batchnorm) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A model with lively BatchNorm statistics, an odd-sized batch and its fp32 logits computed on the CPU."""
    model = randomise_batchnorm(DeepLabV3Plus(num_classes=5)).eval()
    batch = torch.randn(2, 3, 67, 93)
    with torch.no_grad():
        return model, batch, model(batch)


def _relative_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float((logits.cpu() - reference).abs().max() / reference.abs().max())


def test_the_fp32_engine_on_a_gpu_matches_the_cpu_model_and_leaves_tf32_as_it_was(model_and_logits) -> None:
    model, batch, reference = model_and_logits
    before = torch.backends.cudnn.allow_tf32
    logits = create_engine(model, engine="torch", device="cuda")(batch)
    assert _relative_error(logits, reference) < 1e-4  # TF32 convolutions give about 1e-3
    assert torch.backends.cudnn.allow_tf32 == before


def test_the_half_precision_engine_on_a_gpu_stays_close(model_and_logits) -> None:
    model, batch, reference = model_and_logits
    assert _relative_error(create_engine(model, engine="torch-bf16", device="cuda")(batch), reference) < 2e-2


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_gpu_run_trains_resumes_evaluates_and_predicts(amp: str, demo_root: Path, tmp_path: Path, capsys) -> None:
    split_file(demo_root, "val2").write_text("val_0000\nval_0001\n")
    common = ["--dataset", "demo", "--data-root", str(demo_root), "--val-split", "val2", "--crop-size", "64",
              "--batch-size", "4", "--workers", "0", "--no-progress", "--device", "cuda", "--amp", amp]
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:  # fp16's skipped first steps raise no alarm
        warnings.simplefilter("always")
        assert train_tool.main([*common, "--iters", "4", "--val-every", "2", "--out", str(out)]) == 0
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]
    assert train_tool.main(["--resume", str(out / "last.pt"), "--iters", "6", "--no-progress", "--workers", "0"]) == 0
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "miou" in entry][-1] == 6
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log if "loss" in entry)
    assert eval_tool.main(["--checkpoint", str(out / "last.pt"), "--data-root", str(demo_root), "--split", "val2",
                           "--device", "cuda", "--workers", "0"]) == 0
    image = next((demo_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("val_0000.*"))
    assert predict_tool.main([str(image), "--checkpoint", str(out / "last.pt"), "--device", "cuda", "--engine",
                              "torch", "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "val_0000_mask.png").is_file()
    capsys.readouterr()
