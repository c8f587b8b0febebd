"""DeepLabV3+ assembly: shapes for any size, rebuild from config, training with batch 1, the plain variant."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from deeplab import DeepLabV3Plus, build_model
from deeplab.models import default_atrous_rates


@pytest.mark.parametrize("size", [(65, 97), (33, 33), (128, 96)])
def test_logits_have_input_size(size: tuple[int, int]) -> None:
    model = build_model(num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 5, *size)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_atrous_rates_follow_output_stride(output_stride: int) -> None:
    model = build_model(output_stride=output_stride)
    dilations = [m.dilation[0] for m in model.aspp.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations == list(default_atrous_rates(output_stride))
    assert default_atrous_rates(16) == (6, 12, 18) and default_atrous_rates(8) == (12, 24, 36)


def test_explicit_atrous_rates_override() -> None:
    model = build_model(atrous_rates=(2, 4, 6))
    assert model.config["atrous_rates"] == [2, 4, 6]


def test_config_rebuilds_identical_architecture() -> None:
    model = build_model(num_classes=7, output_stride=8, separable=False, width_mult=0.5)
    rebuilt = build_model(**model.config)
    assert isinstance(rebuilt, DeepLabV3Plus) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert all(isinstance(v, (str, int, float, bool, list)) for v in model.config.values())


def test_separable_is_cheaper_than_plain() -> None:
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    separable, plain = build_model(), build_model(separable=False)
    assert count(separable) < count(plain)
    plain_convs = [m for m in plain.decoder.fuse.modules() if isinstance(m, nn.Conv2d)]
    assert [m.kernel_size for m in plain_convs] == [(3, 3), (3, 3)] and all(m.groups == 1 for m in plain_convs)


def test_plain_variant_uses_conv_bn_relu_blocks() -> None:
    plain = build_model(separable=False)
    for branch in list(plain.aspp.branches)[:-1]:
        assert [type(m) for m in branch] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_batch_one_training_step_and_backward() -> None:
    model = build_model(num_classes=3).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = torch.randn(1, 3, 65, 65), torch.randint(0, 3, (1, 65, 65))
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    with torch.no_grad():
        assert nn.functional.cross_entropy(model(x), target) < loss  # the step learned from the one image


def test_eval_batch_one_is_deterministic() -> None:
    model = build_model(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_image_pooling_uses_running_stats_only_for_batch_one() -> None:
    model = build_model(num_classes=3).train()
    pooling = model.aspp.branches[-1]
    before = pooling.bn.running_mean.clone()
    model(torch.randn(1, 3, 64, 64))
    assert torch.equal(pooling.bn.running_mean, before)
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(pooling.bn.running_mean, before)


@pytest.mark.parametrize("num_classes", [0, 2.5, "21", True])
def test_bad_num_classes(num_classes) -> None:
    """2.5 failed deep in a conv ('out_channels must be divisible by groups'); True built a one-class model."""
    with pytest.raises(ValueError, match=rf"^num_classes must be a positive integer, got {num_classes!r}$"):
        build_model(num_classes=num_classes, width_mult=0.25)


def test_numpy_num_classes_and_a_string_output_stride() -> None:
    assert type(build_model(num_classes=np.int64(3), width_mult=0.25).config["num_classes"]) is int
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got '16'"):
        build_model(output_stride="16", width_mult=0.25)


def test_a_numpy_output_stride_builds_the_plain_model() -> None:
    """It failed inside torchvision's conv block ('object of type numpy.int64 has no len()')."""
    model = build_model(num_classes=3, output_stride=np.int64(8), width_mult=0.25)
    assert model.config["output_stride"] == 8 and model.config["atrous_rates"] == [12, 24, 36]
    assert all(type(value) is int for value in (model.config["output_stride"], *model.config["atrous_rates"]))


@pytest.mark.parametrize("rates", [[0, 12, 18], "6,12,18", [6.5, 12, 18], [True, 12, 18]])
def test_bad_atrous_rates_are_refused_when_built(rates) -> None:
    """They built, were saved in checkpoints, and failed at the first forward pass inside a convolution."""
    with pytest.raises(ValueError, match=rf"^atrous_rates must be positive integers, got {re.escape(repr(rates))}$"):
        build_model(num_classes=3, atrous_rates=rates, width_mult=0.25)


@pytest.mark.parametrize("option", ["separable", "low_level_first", "align_corners"])
def test_switches_that_are_not_bools_are_refused_when_built(option: str) -> None:
    """The string "false" of a config file is true: it built the other architecture and saved "false" in config."""
    with pytest.raises(ValueError, match=rf"^{option} must be True or False, got 'false'$"):
        build_model(num_classes=3, width_mult=0.25, **{option: "false"})
    assert build_model(num_classes=3, width_mult=0.25, **{option: np.bool_(False)}).config[option] is False


@pytest.mark.parametrize(("option", "value"), [("aspp_channels", 0), ("aspp_channels", "256"),
                                               ("decoder_convs", 2.0)])
def test_channel_and_conv_counts_that_are_not_positive_integers_are_refused_when_built(option: str, value) -> None:
    """aspp_channels=0 built, and failed at the first forward pass inside a convolution; a string or float failed
    inside torch with a message that named no argument."""
    with pytest.raises(ValueError, match=rf"^{option} must be a positive integer, got {re.escape(repr(value))}$"):
        build_model(num_classes=3, width_mult=0.25, **{option: value})


def test_model_built_directly_records_its_config() -> None:
    model = DeepLabV3Plus("mobilenetv3_small", num_classes=4, output_stride=8, separable=False)
    assert model.config["backbone"] == "mobilenetv3_small" and model.config["atrous_rates"] == [12, 24, 36]
    rebuilt = DeepLabV3Plus(**model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))
