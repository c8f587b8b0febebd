"""xception65: built from timm's model, its state dict loads unchanged and gives timm's own taps; dilation works
through timm's static padding (a failed fetch: tests/backbones/test_timm_backbones.py)."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from backbones import build_backbone


@pytest.fixture(scope="module")
def xception_os8() -> nn.Module:
    """Built once: xception65 is big and slow to build."""
    return build_backbone("xception65", output_stride=8).eval()


def test_convs_use_static_symmetric_padding(xception_os8) -> None:
    """The dilation helper recomputes padding as d*(k-1)//2, which is only right for plain nn.Conv2d."""
    convs = [m for m in xception_os8.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)
    for m in convs:
        assert m.padding == tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
    assert max(m.dilation[0] for m in convs) == 4


def test_loads_timm_state_dict_and_matches_timm_taps(tmp_path, randomise_batchnorm) -> None:
    reference = randomise_batchnorm(timm.create_model("xception65", pretrained=False))
    if not hasattr(reference, "forward_intermediates"):
        pytest.skip(f"timm {timm.__version__} gives no intermediate features to compare with")
    path = tmp_path / "xception65.pth"
    torch.save(reference.state_dict(), path)
    ours = build_backbone("xception65", output_stride=32, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # timm's feature index 1 is the stride-4 tap, index 4 the final block output.
        low_level, out = reference.forward_intermediates(x, indices=[1, 4], intermediates_only=True)
        features = ours(x)
        unloaded = build_backbone("xception65", output_stride=32).eval()(x)["out"]
    assert reference.feature_info[1]["reduction"] == 4 and reference.feature_info[4]["num_chs"] == 2048
    assert (features["low_level"] - low_level).abs().max() < 1e-5
    assert (features["out"] - out).abs().max() < 1e-5
    assert (features["out"] - unloaded).abs().max() > 1e-3  # the load changed the weights
    assert ours.mean == tuple(reference.pretrained_cfg["mean"]) and ours.std == tuple(reference.pretrained_cfg["std"])


def test_normalisation_is_timms_inception_statistics() -> None:
    """Written out so registering the backbone does not import timm; they must stay timm's."""
    from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD

    from backbones.xception import Xception65Backbone

    assert Xception65Backbone.mean == tuple(IMAGENET_INCEPTION_MEAN)
    assert Xception65Backbone.std == tuple(IMAGENET_INCEPTION_STD)
