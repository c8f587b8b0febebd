"""MobileNetV2 loads torchvision's state dict unchanged and reproduces torchvision's features."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v2

from backbones import build_backbone
from deeplab.errors import UserError


def _randomised_torchvision_mobilenet_v2() -> torch.nn.Module:
    reference = mobilenet_v2(weights=None)
    generator = torch.Generator().manual_seed(1)
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            # Non-trivial statistics and affine terms, so a wrong key mapping cannot go unnoticed.
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return reference.eval()


def test_torchvision_state_dict_round_trip(tmp_path: Path) -> None:
    reference = _randomised_torchvision_mobilenet_v2()
    weights = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), weights)
    ours = build_backbone("mobilenetv2", output_stride=32, pretrained=weights).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        features = ours(x)
        expected_low, expected_out = reference.features[:4](x), reference.features[:18](x)
    assert (features["low_level"] - expected_low).abs().max() < 1e-5
    assert (features["out"] - expected_out).abs().max() < 1e-5


def test_same_weights_load_at_every_output_stride(tmp_path: Path) -> None:
    weights = tmp_path / "mobilenet_v2.pth"
    torch.save(_randomised_torchvision_mobilenet_v2().state_dict(), weights)
    for output_stride in (8, 16):
        backbone = build_backbone("mobilenetv2", output_stride=output_stride, pretrained=weights)
        assert backbone.feature_info["out"].stride == output_stride


def test_wrong_weights_file_names_the_file(tmp_path: Path) -> None:
    weights = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    with pytest.raises(UserError, match="other.pth"):
        build_backbone("mobilenetv2", pretrained=weights)


def test_missing_and_corrupt_weights_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        build_backbone("mobilenetv2", pretrained=tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="corrupt.pth"):
        build_backbone("mobilenetv2", pretrained=corrupt)


def test_width_mult_changes_channels() -> None:
    narrow = build_backbone("mobilenetv2", width_mult=0.5)
    assert narrow.feature_info["low_level"].channels == 16
    assert narrow.feature_info["out"].channels == 160
    with pytest.raises(UserError, match="width_mult"):
        narrow.load_pretrained(True)
