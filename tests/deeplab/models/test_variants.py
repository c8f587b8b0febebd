"""Architecture options for weights trained elsewhere: decoder variants, upsampling corners, normalisation,
dropouts, another output stride; each is recorded in ``config`` and each changes what it should."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplab import DeepLabV3Plus, build_model
from deeplab.checkpoint import min_input_side
from deeplab.models import config_at_output_stride

SMALL = {"num_classes": 4, "width_mult": 0.25}
VARIANT = {"separable": False, "decoder_convs": 1, "low_level_first": True, "align_corners": True,
           "aspp_dropout": 0.0, "decoder_dropouts": [0.5], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
           "dilate_strided_block": False, "pad_block_input": True}


def test_every_option_is_plain_data_in_config_and_rebuilds(randomise_batchnorm) -> None:
    model = randomise_batchnorm(build_model(**SMALL, **VARIANT))
    assert {k: model.config[k] for k in VARIANT} == VARIANT
    rebuilt = DeepLabV3Plus(**model.config).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert model.mean == (0.0, 0.0, 0.0) and model.std == (1.0, 1.0, 1.0)


def test_defaults_are_unchanged() -> None:
    model = build_model(num_classes=3)
    assert len(model.decoder.fuse) == 2 and not model.decoder.low_level_first and not model.align_corners
    assert model.mean == (0.485, 0.456, 0.406) and model.config["mean"] == [0.485, 0.456, 0.406]
    assert [type(m) for m in model.decoder.dropouts] == [nn.Identity, nn.Identity]


def test_concatenation_order_is_the_order_of_the_fuse_conv_input(randomise_batchnorm) -> None:
    """Swapping the two input-channel blocks of the first fuse conv and the order gives the same logits."""
    aspp_first = randomise_batchnorm(build_model(**SMALL, separable=False))
    low_first = build_model(**SMALL, separable=False, low_level_first=True).eval()
    state = dict(aspp_first.state_dict())
    weight = state["decoder.fuse.0.0.weight"]
    aspp_channels = aspp_first.config["aspp_channels"]
    state["decoder.fuse.0.0.weight"] = torch.cat([weight[:, aspp_channels:], weight[:, :aspp_channels]], dim=1)
    low_first.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        expected = aspp_first(x)
        torch.testing.assert_close(low_first(x), expected)
        low_first.load_state_dict(aspp_first.state_dict())
        assert not torch.allclose(low_first(x), expected, atol=1e-3)


def test_align_corners_changes_only_the_upsampling(randomise_batchnorm) -> None:
    plain = randomise_batchnorm(build_model(**SMALL))
    corners = build_model(**SMALL, align_corners=True).eval()
    corners.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        a, b = plain(x), corners(x)
    assert not torch.allclose(a, b, atol=1e-4)
    # Corner pixels sit on the low-resolution grid's corners under align_corners=True: equal to the coarse logits.
    with torch.no_grad():
        features = corners.backbone(x)
        coarse = corners.decoder(corners.aspp(features["out"]), features["low_level"])
    torch.testing.assert_close(b[..., 0, 0], coarse[..., 0, 0])


def test_one_decoder_conv_and_dropouts_in_training_only() -> None:
    model = build_model(**SMALL, decoder_convs=1, decoder_dropouts=[0.9])
    assert len(model.decoder.fuse) == 1 and isinstance(model.decoder.dropouts[0], nn.Dropout)
    x = torch.randn(2, 3, 33, 33)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout draws differ
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="one dropout rate per decoder conv"):
        build_model(**SMALL, decoder_convs=2, decoder_dropouts=[0.1])
    with pytest.raises(ValueError, match="std must be positive"):
        build_model(**SMALL, std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="not of pixels scaled to \\[0, 1\\]: divide"):
        build_model(**SMALL, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])


@pytest.mark.parametrize(("rates", "old", "new", "expected"), [
    ([6, 12, 18], 16, 8, [12, 24, 36]),
    ([12, 24, 36], 8, 16, [6, 12, 18]),
    ([4, 8, 12], 16, 8, [8, 16, 24]),
])
def test_another_output_stride_scales_the_rates_and_keeps_the_weights(rates, old, new, expected) -> None:
    model = build_model(**SMALL, output_stride=old, atrous_rates=rates)
    config = config_at_output_stride(model.config, new)
    assert config["output_stride"] == new and config["atrous_rates"] == expected
    DeepLabV3Plus(**config).load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(ValueError, match="do not scale"):
        config_at_output_stride({**model.config, "atrous_rates": [3, 5, 7]}, 32)


@pytest.mark.parametrize("variant", [{}, {"pad_block_input": True}], ids=["padded", "unpadded_stem"])
def test_declared_smallest_input_runs_and_one_pixel_less_does_not(variant: dict) -> None:
    model = build_model(**SMALL, **variant).eval()
    side = min_input_side(model.config)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, side, 50)).shape[-2:] == (side, 50)
        if side > 1:
            with pytest.raises(RuntimeError):
                model(torch.zeros(1, 3, side - 1, 50))
