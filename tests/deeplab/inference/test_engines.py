"""Inference engines: every engine gives fp32 logits of the input's size close to eager fp32; BN folding is exact."""
from __future__ import annotations

import copy
import errno
import importlib.util
import threading
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from deeplab.errors import UserError
from deeplab.inference import ENGINES, create_engine, resolve_engine
from deeplab.inference.engines import SPECS, bf16_supported
from deeplab.inference.fuse import fold_batchnorm
from deeplab.inference.tta import class_scores
from deeplab.models import build_model

# Per-engine bounds on |logit - fp32 eager| relative to the logits' range, and on argmax disagreement.
TOLERANCES = {
    "torch": (1e-4, 0.0),
    "onnxruntime": (1e-4, 0.0),
    "torch-bf16": (5e-2, 0.05),
    "int8": (0.15, 0.2),
    # f32 as tight as ONNX Runtime: OpenVINO's CPU plugin would run bf16 on a bf16 CPU unless told not to.
    "openvino": (1e-4, 0.0),
    "openvino-bf16": (5e-2, 0.05),
    "openvino-int8": (0.15, 0.2),
}
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None


def skip_if_missing(engine: str) -> None:
    if SPECS[engine].runtime == "openvino" and not HAS_OPENVINO:
        pytest.skip("openvino or nncf not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def tiny_model(randomise_batchnorm) -> nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm(build_model(num_classes=3, width_mult=0.25), seed=1)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, 37, 51, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("engine", [pytest.param(e, marks=pytest.mark.slow) if e == "openvino-int8" else e
                                    for e in ENGINES])  # NNCF's calibration takes the longest
def test_engine_matches_fp32_eager(tiny_model: nn.Module, batch: torch.Tensor, engine: str) -> None:
    engine = resolve_engine(engine) if engine == "auto" else engine
    skip_if_missing(engine)
    if engine == "torch-bf16" and not bf16_supported() or engine == "openvino-bf16" and not _openvino_bf16():
        with pytest.raises(ValueError, match="native bf16"):
            create_engine(tiny_model, engine=engine)
        return
    calibration = [torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    run = create_engine(tiny_model, engine=engine, calibration=calibration)
    with torch.inference_mode():
        expected = tiny_model(batch)
    got = run(batch)
    assert got.shape == (2, 3, 37, 51) and got.dtype == torch.float32
    logit_range = float(expected.max() - expected.min())
    max_rel, max_disagreement = TOLERANCES[engine]
    assert float((got.cpu() - expected).abs().max()) <= max_rel * logit_range
    assert float((got.cpu().argmax(1) != expected.argmax(1)).float().mean()) <= max_disagreement
    assert torch.equal(run(batch.double()), got)  # normalised in numpy: float64, as every runtime takes it


@pytest.mark.slow  # NNCF's import and calibration
def test_nncf_progress_stays_off_standard_output(tiny_model: nn.Module, capsys: pytest.CaptureFixture[str]) -> None:
    """Standard output holds a tool's results: predict.py's summary, or a report written to /dev/stdout."""
    skip_if_missing("openvino-int8")
    create_engine(tiny_model, engine="openvino-int8", calibration=[torch.randn(1, 3, 24, 24)])
    assert capsys.readouterr().out == ""


def test_openvino_engine_gives_each_thread_its_own_logits() -> None:
    """Callers in several threads share one compiled engine (the web app's tabs): none gets another's logits."""
    skip_if_missing("openvino")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    run = create_engine(model, engine="openvino")
    inputs = [torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.inference_mode():
        expected = [model(x) for x in inputs]
    wrong = []

    def call(i: int) -> None:
        wrong.extend(i for _ in range(50) if not torch.allclose(run(inputs[i]), expected[i], atol=1e-4))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def _openvino_bf16() -> bool:
    from deeplab.inference.openvino_engine import bf16_native

    return bf16_native()


def test_every_engine_has_a_tolerance() -> None:
    assert set(ENGINES) == {"auto", *TOLERANCES}


def test_a_missing_runtime_is_named_with_its_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplab.inference import engines

    monkeypatch.setattr(engines, "_installed", lambda package: package != "nncf")
    with pytest.raises(ValueError, match=r"needs nncf, which is not installed: pip install .*\[openvino\]"):
        resolve_engine("openvino-int8")
    monkeypatch.setattr(engines, "_installed", lambda package: package != "openvino")
    with pytest.raises(ValueError, match=r"needs openvino, which is not installed: pip install .*\[openvino\]"):
        resolve_engine("openvino-bf16")
    monkeypatch.setattr(engines, "_installed", lambda package: package != "onnxruntime")
    assert resolve_engine("auto") == "torch"


def test_batchnorm_folding_preserves_outputs(tiny_model: nn.Module, batch: torch.Tensor) -> None:
    folded = fold_batchnorm(tiny_model, torch.randn(1, 3, 32, 32))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny_model.modules()), "the original must stay untouched"
    with torch.inference_mode():
        assert torch.allclose(folded(batch), tiny_model(batch), atol=1e-4, rtol=0)


def test_the_torch_engine_leaves_a_model_in_training_mode_training(tiny_model: nn.Module) -> None:
    """Predictor's advice for a model in training mode is create_engine(model): mid-training, that must not switch
    the model's BatchNorm and dropout to eval for the steps that follow."""
    model = copy.deepcopy(tiny_model).train()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    create_engine(model, engine="torch")
    assert all(module.training for module in model.modules())
    assert torch.equal(torch.rand(3), expected)  # nor moves the run's random stream


def test_a_compiled_model_makes_the_engines_of_the_model_it_wraps(tiny_model: nn.Module, batch: torch.Tensor) -> None:
    """The ONNX export refused to trace torch.compile's wrapper; the torch engine compiled a copy for a minute."""
    compiled = torch.compile(tiny_model)
    with torch.inference_mode():
        expected = tiny_model(batch)
    for engine in ("onnxruntime", "torch"):
        assert torch.allclose(create_engine(compiled, engine=engine)(batch), expected, atol=1e-4, rtol=0)


def test_folding_refuses_a_conv_output_read_twice(randomise_batchnorm) -> None:
    class Shortcut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    model = randomise_batchnorm(Shortcut())
    with pytest.raises(RuntimeError, match="changed the output"):
        fold_batchnorm(model, torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "int8"])
def test_nan_scores_are_a_user_error_not_a_mask(tiny_model: nn.Module, batch: torch.Tensor, engine: str) -> None:
    """A model whose BatchNorm statistics diverged: folding, int8 calibration (a finite model of nothing, or an
    assertion in ONNX Runtime's quantiser) or the mask's argmax would hide the NaN."""
    broken = copy.deepcopy(tiny_model)
    next(m for m in broken.modules() if isinstance(m, nn.BatchNorm2d)).running_var.fill_(-1.0)
    with pytest.raises(UserError, match="input are NaN or infinite: its weights or BatchNorm"):
        class_scores(create_engine(broken, engine=engine, calibration=[batch]), batch)


@pytest.mark.parametrize("scales", [(), (float("nan"),), (1.0, -0.5)])
def test_no_scales_or_unusable_ones_are_one_line(tiny_model: nn.Module, batch: torch.Tensor, scales) -> None:
    with pytest.raises(UserError, match=r"^--scales .*: expected one or more positive numbers"):
        class_scores(create_engine(tiny_model, engine="torch"), batch, scales=scales)


@pytest.mark.parametrize("scale", [0.5, 0.75])
def test_test_time_scales_keep_an_odd_side_aligned(scale: float) -> None:
    """floor(97 * scale) pixels cover the whole 97-pixel side: with a model that returns its input as class scores,
    a class edge near the far border stays in its column (a scale_factor resize moved it one pixel right)."""
    scores = torch.zeros(1, 2, 9, 97)
    scores[:, 0, :, :90], scores[:, 1, :, 90:] = 5.0, 5.0
    pred = class_scores(lambda view: view.clone(), scores, scales=(scale,)).argmax(1)
    assert torch.equal(pred, scores.argmax(1))


def test_unknown_engine_raises(tiny_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        create_engine(tiny_model, engine="tensorrt")


@pytest.mark.parametrize("engine", ["int8", "openvino-int8"])
def test_int8_needs_calibration(tiny_model: nn.Module, engine: str) -> None:
    skip_if_missing(engine)
    with pytest.raises(ValueError, match="calibration"):
        create_engine(tiny_model, engine=engine)
    with pytest.raises(ValueError, match=r"expected \(N, 3, H, W\) batches, got one of shape \(3, 32, 32\); pass "
                                          r"\[batch\]"):  # the model's 'expected 4D input' named no argument
        create_engine(tiny_model, engine=engine, calibration=torch.randn(2, 3, 32, 32))


def test_auto_and_device_guards() -> None:
    assert resolve_engine("auto", "cpu") == "onnxruntime"  # exact fp32: see the measurements in engines.py
    for engine in ("onnxruntime", "openvino"):
        with pytest.raises(ValueError, match="CPU only"):
            resolve_engine(engine, "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_engine(nn.Conv2d(3, 3, 1), engine="torch", device="cuda")
    else:
        assert resolve_engine("auto", "cuda") == "torch-bf16"


@pytest.mark.parametrize("free", [0, 1 << 40])
def test_a_full_disk_under_openvino_is_an_os_error_saying_so(free: int, tmp_path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    skip_if_missing("openvino")
    import openvino as ov

    from deeplab.inference import openvino_engine

    torch.onnx.export(nn.Conv2d(3, 2, 1), (torch.randn(1, 3, 4, 4),), str(tmp_path / "m.onnx"), dynamo=False)

    def full(*args, **kwargs) -> None:
        raise RuntimeError("basic_ios::clear: iostream error")  # all OpenVINO says when the disk is full

    monkeypatch.setattr(ov, "save_model", full)
    monkeypatch.setattr(openvino_engine.shutil, "disk_usage", lambda path: SimpleNamespace(free=free))
    with pytest.raises(OSError if free == 0 else RuntimeError) as caught:
        openvino_engine.onnx_to_ir(tmp_path / "m.onnx", tmp_path / "m.xml")
    assert free or caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "m.xml")

