"""Backbones built on torchvision models (MobileNetV2/V3, ShuffleNetV2): its state dicts load unchanged and give
its features; wrong or missing files are one-line errors; dilation reaches every strided branch."""
from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from backbones import WeightsError, build_backbone


# name -> (torchvision model, module whose output is "low_level", module whose output is "out"), stated
# independently of the backbones so a wrong tap shows.
UPSTREAM = {
    "mobilenetv2": ("mobilenet_v2", "features.3", "features.17"),
    "mobilenetv3_large": ("mobilenet_v3_large", "features.3", "features.16"),
    "mobilenetv3_small": ("mobilenet_v3_small", "features.1", "features.12"),
    "shufflenetv2_x0_5": ("shufflenet_v2_x0_5", "maxpool", "conv5"),
    "shufflenetv2_x1_0": ("shufflenet_v2_x1_0", "maxpool", "conv5"),
    "shufflenetv2_x1_5": ("shufflenet_v2_x1_5", "maxpool", "conv5"),
    "shufflenetv2_x2_0": ("shufflenet_v2_x2_0", "maxpool", "conv5"),
}
NAMES = sorted(UPSTREAM)
# A model whose state dict must be refused by each name (other keys, or same keys with other shapes).
WRONG = {
    "mobilenetv2": "mobilenet_v3_large",
    "mobilenetv3_large": "mobilenet_v3_small",
    "mobilenetv3_small": "mobilenet_v3_large",
    "shufflenetv2_x0_5": "shufflenet_v2_x1_0",
    "shufflenetv2_x1_0": "shufflenet_v2_x0_5",
    "shufflenetv2_x1_5": "shufflenet_v2_x2_0",
    "shufflenetv2_x2_0": "shufflenet_v2_x1_5",
}


def _upstream_features(model: nn.Module, taps: tuple[str, str], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the named modules during the upstream model's own forward pass."""
    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[t].register_forward_hook(lambda m, i, o, t=t: captured.__setitem__(t, o.clone())) for t in taps]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return [captured[t] for t in taps]


@pytest.mark.parametrize("name", NAMES)
def test_upstream_state_dict_round_trip(name: str, tmp_path: Path, randomise_batchnorm) -> None:
    upstream, *taps = UPSTREAM[name]
    reference = randomise_batchnorm(get_model(upstream, weights=None))
    path = tmp_path / f"{upstream}.pth"
    torch.save(reference.state_dict(), path)
    ours = build_backbone(name, output_stride=32, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = ours(x)
    expected_low, expected_out = _upstream_features(reference, tuple(taps), x)
    assert (features["low_level"] - expected_low).abs().max() < 1e-5
    assert (features["out"] - expected_out).abs().max() < 1e-5
    build_backbone(name, output_stride=8, pretrained=path)  # dilation keeps every parameter shape


@pytest.mark.parametrize("name", NAMES)
def test_wrong_weights_file_names_the_file(name: str, tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(get_model(WRONG[name], weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=str(path)) as info:
        build_backbone(name, pretrained=path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "upstream"), [("mobilenetv3_small", "mobilenet_v3_small"),
                                              ("shufflenetv2_x0_5", "shufflenet_v2_x0_5"),
                                              ("inception_v1", "googlenet"), ("inception_v3", "inception_v3")])
def test_pretrained_offline_is_one_line_user_error(name: str, upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        requested.append(url)
        raise URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="could not fetch ImageNet weights") as info:
        build_backbone(name, pretrained=True)
    assert "\n" not in str(info.value) and build_backbone(name).weights_source in str(info.value)
    assert requested == [get_model_weights(upstream).IMAGENET1K_V1.url]


@pytest.mark.parametrize("name", ["mobilenetv3_large", "mobilenetv3_small"])
def test_mobilenetv3_os16_equals_torchvision_dilated(name: str, randomise_batchnorm) -> None:
    """torchvision's ``dilated=True`` variant is the stride-16 network DeepLabV3 uses: ours must compute the same."""
    upstream, _, out_tap = UPSTREAM[name]
    reference = randomise_batchnorm(get_model(upstream, weights=None, dilated=True))
    ours = build_backbone(name, output_stride=16).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("classifier.")})
    x = torch.randn(1, 3, 33, 49)
    (expected,) = _upstream_features(reference, (out_tap,), x)
    with torch.no_grad():
        assert (ours(x)["out"] - expected).abs().max() < 1e-5


@pytest.mark.parametrize(("output_stride", "dilations"), [(32, (1, 1, 1)), (16, (1, 1, 2)), (8, (1, 2, 4))])
def test_shufflenet_strided_branches_are_dilated(output_stride: int, dilations: tuple[int, int, int]) -> None:
    backbone = build_backbone("shufflenetv2_x0_5", output_stride=output_stride)
    for stage, dilation in zip((backbone.stage2, backbone.stage3, backbone.stage4), dilations):
        first = stage[0]
        assert first.stride == 2  # the block must keep running both branches
        for conv in (first.branch1[0], first.branch2[3]):
            assert conv.dilation == (dilation, dilation) and conv.padding == (dilation, dilation)
            assert conv.stride == ((2, 2) if dilation == 1 else (1, 1))
        spatial = [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert {m.dilation for m in spatial} == {(dilation, dilation)}


def test_same_weights_load_at_every_output_stride(tmp_path: Path) -> None:
    weights = tmp_path / "mobilenet_v2.pth"
    torch.save(get_model("mobilenet_v2", weights=None).state_dict(), weights)
    for output_stride in (8, 16):
        backbone = build_backbone("mobilenetv2", output_stride=output_stride, pretrained=weights)
        assert backbone.feature_info["out"].stride == output_stride


@pytest.mark.parametrize("wrap", [lambda state: state, lambda state: {"state_dict": state, "epoch": 3}])
def test_weights_saved_from_data_parallel_load(wrap, tmp_path: Path, randomise_batchnorm) -> None:
    reference = randomise_batchnorm(get_model("mobilenet_v2", weights=None))
    path = tmp_path / "ddp.pth"
    torch.save(wrap({f"module.{key}": value for key, value in reference.state_dict().items()}), path)
    ours = build_backbone("mobilenetv2", output_stride=32, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x)["out"], _upstream_features(reference, ("features.17",), x)[0], atol=1e-5)


def test_weights_saved_before_batchnorm_counted_batches_load(tmp_path: Path, randomise_batchnorm) -> None:
    """Files saved before PyTorch 0.4.1 hold no ``num_batches_tracked``; PyTorch's own loading accepts them."""
    reference = randomise_batchnorm(get_model("mobilenet_v2", weights=None))
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    ours = build_backbone("mobilenetv2", output_stride=32, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x)["out"], _upstream_features(reference, ("features.17",), x)[0], atol=1e-5)


def test_missing_and_corrupt_weights_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        build_backbone("mobilenetv2", pretrained=tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="corrupt.pth"):
        build_backbone("mobilenetv2", pretrained=corrupt)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="other.pth"):
        build_backbone("mobilenetv2", pretrained=other)


def test_imagenet_and_none_mean_what_they_mean_on_the_command_line() -> None:
    """``pretrained="imagenet"`` was looked for as a file: 'imagenet: weights file not found'."""
    with pytest.raises(WeightsError, match="^mobilenetv1 has no upstream ImageNet weights"):
        build_backbone("mobilenetv1", pretrained="ImageNet")
    assert build_backbone("mobilenetv2", pretrained="none").feature_info["out"].channels == 320


def test_mobilenetv2_width_mult_changes_channels() -> None:
    narrow = build_backbone("mobilenetv2", width_mult=0.5)
    assert narrow.feature_info["low_level"].channels == 16
    assert narrow.feature_info["out"].channels == 160
    with pytest.raises(WeightsError, match="width_mult"):
        narrow.load_pretrained(True)
