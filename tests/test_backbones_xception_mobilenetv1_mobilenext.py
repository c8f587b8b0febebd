"""xception65, mobilenetv1 and mobilenext: declared features vs measured ones, weight loading, DeepLabV3+ use."""
from __future__ import annotations


import pytest
import timm
import torch
from torch import nn

from backbones import build_backbone, mobilenetv1, mobilenext, xception  # noqa: F401  (registers the names)
from deeplab.errors import UserError

NAMES = ("xception65", "mobilenetv1", "mobilenext")
OWN_NAMES = ("mobilenetv1", "mobilenext")
OUTPUT_STRIDES = (8, 16, 32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core runner they slow xception65 ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(one_thread) -> dict[tuple[str, int], nn.Module]:
    """Each (name, output_stride) backbone built once, in eval mode: xception65 is big and slow to build."""
    return {(n, s): build_backbone(n, output_stride=s).eval() for n in NAMES for s in OUTPUT_STRIDES}


def _randomise(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial affine weights and running stats so a wrong mapping changes the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_convs_use_static_symmetric_padding(built, name: str) -> None:
    """The dilation helper recomputes padding as d*(k-1)//2, which is only right for plain nn.Conv2d."""
    convs = [m for m in built[(name, 8)].modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is nn.Conv2d for m in convs)
    for m in convs:
        assert m.padding == tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
    assert max(m.dilation[0] for m in convs) == 4


def test_xception65_loads_timm_state_dict_and_matches_timm_taps(built, tmp_path) -> None:
    reference = _randomise(timm.create_model("xception65", pretrained=False))
    path = tmp_path / "xception65.pth"
    torch.save(reference.state_dict(), path)
    ours = build_backbone("xception65", output_stride=32, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # timm's feature index 1 is the stride-4 tap, index 4 the final block output.
        low_level, out = reference.forward_intermediates(x, indices=[1, 4], intermediates_only=True)
        features = ours(x)
    assert reference.feature_info[1]["reduction"] == 4 and reference.feature_info[4]["num_chs"] == 2048
    assert (features["low_level"] - low_level).abs().max() < 1e-5
    assert (features["out"] - out).abs().max() < 1e-5
    with torch.no_grad():
        unloaded = built[("xception65", 32)](x)["out"]
    assert (features["out"] - unloaded).abs().max() > 1e-3  # the load changed the weights
    assert ours.mean == tuple(reference.pretrained_cfg["mean"]) and ours.std == tuple(reference.pretrained_cfg["std"])


def test_xception65_fetch_failure_is_one_line_user_error(built, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load this file")

    monkeypatch.setattr(timm, "create_model", offline)
    backbone = built[("xception65", 32)]
    with pytest.raises(UserError) as info:
        backbone.load_pretrained(True)
    message = str(info.value)
    assert "\n" not in message and "xception65" in message and "huggingface" in message


@pytest.mark.parametrize("name", OWN_NAMES)
def test_own_backbones_round_trip_their_state_dict(name: str, tmp_path) -> None:
    source = _randomise(build_backbone(name, output_stride=32))
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
    assert torch.equal(dilated.state_dict()["features.0.0.weight"], source.state_dict()["features.0.0.weight"])


@pytest.mark.parametrize("name", OWN_NAMES)
def test_own_backbones_have_no_imagenet_weights(name: str, tmp_path) -> None:
    assert build_backbone(name).weights_source is None
    with pytest.raises(UserError, match="no upstream ImageNet weights"):
        build_backbone(name, pretrained=True)
    other = OWN_NAMES[1 - OWN_NAMES.index(name)]
    path = tmp_path / "other.pth"
    torch.save(build_backbone(other).state_dict(), path)
    with pytest.raises(UserError, match="not a .* state dict"):
        build_backbone(name, pretrained=path)


@pytest.mark.parametrize("name", OWN_NAMES)
def test_width_mult_changes_channels(built, name: str) -> None:
    narrow = build_backbone(name, output_stride=16, width_mult=0.5).eval()
    with torch.no_grad():
        features = narrow(torch.randn(1, 3, 33, 47))
    for key, info in narrow.feature_info.items():
        assert features[key].shape[1] == info.channels
        assert info.channels < built[(name, 16)].feature_info[key].channels
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in built[(name, 16)].parameters())

