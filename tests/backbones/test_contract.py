"""Every registered backbone keeps the contract at every output stride: declared features == measured ones."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from backbones import (
    Backbone, WeightsError, build_backbone, list_backbones, register_backbone, smallest_training_crop,
)
from backbones.base import FeatureInfo
from deeplab import build_model


NAMES = list_backbones()


@pytest.fixture(scope="module", params=NAMES)
def built(request: pytest.FixtureRequest) -> tuple[str, dict[int, Backbone]]:
    """Each backbone at every output stride, built once: pytest runs one name's tests, then drops it."""
    return request.param, {os_: build_backbone(request.param, output_stride=os_).eval() for os_ in (8, 16, 32)}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_declared_features_match_measured(built: tuple[str, dict[int, Backbone]], output_stride: int) -> None:
    name, backbones = built
    backbone = backbones[output_stride]
    declared = dict(backbone.feature_info)
    assert set(declared) == {"low_level", "out"}
    assert declared["low_level"].stride == 4 and declared["out"].stride == output_stride
    height, width = 33, 49  # odd at every stride: each strided layer must round up
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, height, width))
    assert set(features) == {"low_level", "out"}
    for key, info in declared.items():
        n, c, h, w = features[key].shape
        assert c == info.channels, f"{name}/{key}: declared {info.channels} channels, measured {c}"
        expected = (math.ceil(height / info.stride), math.ceil(width / info.stride))
        assert (h, w) == expected, f"{name}/{key} at OS{output_stride}"


def test_deeplab_on_backbone_trains_and_predicts_any_size(built: tuple[str, dict[int, Backbone]]) -> None:
    model = build_model(backbone=built[0], num_classes=3).train()
    x = torch.randn(2, 3, 33, 47)
    logits = model(x)
    assert logits.shape == (2, 3, 33, 47)
    logits.square().mean().backward()
    backbone_grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in backbone_grads)
    with torch.no_grad():
        assert model.eval()(x[:1, :, :17, :23]).shape == (1, 3, 17, 23)


def _smallest_batchnorm_map(backbone: Backbone, side: int) -> int:
    """Fewest values per channel any BatchNorm of ``backbone``, or its deepest map, gets from one square image."""
    sizes = []
    hooks = [m.register_forward_pre_hook(lambda _, args: sizes.append(args[0][0, 0].numel()))
             for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            sizes.append(backbone(torch.randn(1, 3, side, side))["out"][0, 0].numel())
    finally:
        for hook in hooks:
            hook.remove()
    return min(sizes)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_smallest_training_crop_is_the_first_without_a_1x1_map(built: tuple[str, dict[int, Backbone]],
                                                               output_stride: int) -> None:
    name, backbones = built
    smallest = smallest_training_crop(name, output_stride)
    assert _smallest_batchnorm_map(backbones[output_stride], smallest) > 1
    assert _smallest_batchnorm_map(backbones[output_stride], smallest - 1) == 1


def test_output_stride_keeps_parameter_shapes(built: tuple[str, dict[int, Backbone]]) -> None:
    shapes = {os_: {k: v.shape for k, v in built[1][os_].state_dict().items()} for os_ in (8, 32)}
    assert shapes[8] == shapes[32]


def test_backbone_declares_normalisation(built: tuple[str, dict[int, Backbone]]) -> None:
    backbone = built[1][16]
    assert len(backbone.mean) == 3 and len(backbone.std) == 3 and min(backbone.std) > 0


def test_backbone_saved_whole_loads_and_computes_the_same(built: tuple[str, dict[int, Backbone]]) -> None:
    """torch.save(model) pickles the modules themselves (spawned DataLoader or DDP processes do too)."""
    backbone, x = built[1][16], torch.randn(1, 3, 21, 27)
    buffer = io.BytesIO()
    torch.save(backbone, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert all(torch.equal(restored(x)[key], value) for key, value in backbone(x).items())


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="mobilenetv2"):
        build_backbone("resnet9000")


@pytest.mark.parametrize(("typed", "first_suggestion"), [
    ("mobilenetv22", "mobilenetv2"), ("MobileViT", "mobilevit_s"), ("inceptionv3", "inception_v3"),
    ("mobilenetv4_small", "mobilenetv3_small or mobilenetv4_conv_small"), ("blaze", "blazenet"),
])
def test_misspelt_name_suggests_the_closest(typed: str, first_suggestion: str) -> None:
    with pytest.raises(ValueError) as info:
        build_backbone(typed)
    assert f"unknown backbone {typed!r}; did you mean {first_suggestion}" in str(info.value)
    assert str(info.value).endswith(", ".join(NAMES))


def test_imagenet_weights_for_a_backbone_without_them_name_those_with() -> None:
    with pytest.raises(WeightsError) as info:
        build_backbone("shufflenetv1_g3", pretrained=True)
    have = str(info.value).split("ImageNet weights exist for ")[1].split(", ")
    assert "mobilenetv2" in have and "inception_v3" in have and "mobilevit_xs" in have
    assert not {"shufflenetv1_g3", "blazenet", "inception_v2", "mobilenetv1"} & set(have)
    assert all(build_backbone(name).weights_source for name in ("inception_v1", "mobilenetv4_conv_small"))


def test_wrong_shapes_name_the_first_mismatching_tensor(tmp_path) -> None:
    path = tmp_path / "g8.pth"
    torch.save(build_backbone("shufflenetv1_g8").state_dict(), path)
    with pytest.raises(WeightsError) as info:
        build_backbone("shufflenetv1_g3", pretrained=path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a ShuffleNetV1G3 state dict: stage2.0.compress.0.weight is ")
    assert "(96, 24, 1, 1) in the file but (60, 24, 1, 1) in the model" in message and "\n" not in message


def test_a_whole_deeplab_checkpoint_is_named_as_such(tmp_path, make_checkpoint) -> None:
    path = tmp_path / "best.pt"
    make_checkpoint(path, num_classes=3)  # MobileNetV2 of width 0.25
    with pytest.raises(WeightsError, match=r"whole model whose 'backbone\.' part is a MobileNetV2Backbone.*init-from"):
        build_backbone("mobilenetv2", width_mult=0.25, pretrained=path)
    with pytest.raises(WeightsError, match="not a MobileNetV2Backbone state dict"):  # another width: as before
        build_backbone("mobilenetv2", pretrained=path)


@pytest.mark.parametrize("output_stride", [4, 12, 64])
def test_bad_output_stride_raises(output_stride: int) -> None:
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("mobilenetv2", output_stride=output_stride)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("mobilenetv2")(Backbone)


def test_feature_info_is_frozen() -> None:
    info = FeatureInfo(24, 4)
    with pytest.raises(AttributeError):
        info.channels = 32  # type: ignore[misc]


def test_pretrained_true_offline_is_one_line_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsError) as excinfo:
        build_backbone("mobilenetv2", pretrained=True)
    message = str(excinfo.value)
    assert "\n" not in message and "pass its path" in message


def test_dilation_only_changes_late_stages() -> None:
    os8, os32 = build_backbone("mobilenetv2", output_stride=8), build_backbone("mobilenetv2", output_stride=32)
    dilations8 = [m.dilation for m in os8.modules() if isinstance(m, nn.Conv2d)]
    dilations32 = [m.dilation for m in os32.modules() if isinstance(m, nn.Conv2d)]
    assert set(dilations32) == {(1, 1)}
    assert {(1, 1), (2, 2), (4, 4)} == set(dilations8)
