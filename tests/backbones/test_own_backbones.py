"""Backbones written from their papers (mobilenetv1, mobilenext, shufflenetv1, inception_v2, blazenet): static
padding, state-dict round trips at every stride, no ImageNet weights, width multipliers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones import WeightsError, build_backbone


NAMES = ("mobilenetv1", "mobilenext", "shufflenetv1_g3", "inception_v2", "blazenet")


@pytest.mark.parametrize("name", NAMES)
def test_convs_use_static_symmetric_padding(name: str) -> None:
    """The dilation helper recomputes padding as d*(k-1)//2, which is only right for plain nn.Conv2d."""
    convs = [m for m in build_backbone(name, output_stride=8).modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)
    for m in convs:
        assert m.padding == tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
    assert max(m.dilation[0] for m in convs) == 4


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_their_state_dict(name: str, tmp_path, randomise_batchnorm) -> None:
    source = randomise_batchnorm(build_backbone(name, output_stride=32))
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    x = torch.randn(1, 3, 64, 64)
    loaded = build_backbone(name, output_stride=32, pretrained=path).eval()
    dilated = build_backbone(name, output_stride=8, pretrained=path).eval()  # same shapes at every stride
    with torch.no_grad():
        expected, got = source(x), loaded(x)
        fresh = build_backbone(name, output_stride=32).eval()(x)
    for key in ("low_level", "out"):
        assert torch.equal(expected[key], got[key])
        assert not torch.allclose(expected[key], fresh[key])
    first = next(iter(source.state_dict()))
    assert torch.equal(dilated.state_dict()[first], source.state_dict()[first])


@pytest.mark.parametrize("name", NAMES)
def test_have_no_imagenet_weights(name: str, tmp_path) -> None:
    assert build_backbone(name).weights_source is None
    with pytest.raises(WeightsError, match="no upstream ImageNet weights") as info:
        build_backbone(name, pretrained=True)
    assert "mobilenetv2" in str(info.value) and name not in str(info.value).split("exist for")[1]
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
    path = tmp_path / "other.pth"
    torch.save(build_backbone(other).state_dict(), path)
    with pytest.raises(WeightsError, match="not a .* state dict"):
        build_backbone(name, pretrained=path)


@pytest.mark.parametrize("name", ["mobilenetv1", "mobilenext"])
def test_width_mult_changes_channels(name: str) -> None:
    full = build_backbone(name, output_stride=16)
    narrow = build_backbone(name, output_stride=16, width_mult=0.5).eval()
    with torch.no_grad():
        features = narrow(torch.randn(1, 3, 33, 47))
    for key, info in narrow.feature_info.items():
        assert features[key].shape[1] == info.channels
        assert info.channels < full.feature_info[key].channels
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in full.parameters())
