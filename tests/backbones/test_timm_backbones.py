"""MobileNetV4 and MobileViT on timm's models: timm's state dicts (torch or safetensors files) load strictly and give
timm's own feature maps at every output stride (timm dilates them itself); normalisation as timm declares it; a
failed fetch from the hub is one line (xception65 too); timm imported only on use."""
from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch
from torch import nn

from backbones import WeightsError, build_backbone


MOBILENETV4 = ("mobilenetv4_conv_small", "mobilenetv4_conv_medium", "mobilenetv4_hybrid_medium")
MOBILEVIT = ("mobilevit_s", "mobilevit_xs")
# timm's feature indices of our two taps: 1 is the stride-4 map, 4 the last one.
TAPS = [1, 4]


@pytest.fixture(scope="module", params=MOBILENETV4 + MOBILEVIT)
def upstream(request, tmp_path_factory, randomise_batchnorm):
    """A timm model (head included) with random weights and BatchNorm statistics, saved as a state dict."""
    name = request.param
    model = randomise_batchnorm(timm.create_model(name, pretrained=False))
    path = tmp_path_factory.mktemp(name) / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return name, model, path


def _timm_features(name: str, model: nn.Module, output_stride: int, x: torch.Tensor) -> list[torch.Tensor]:
    """timm's own feature maps at ``output_stride``: its features_only model for MobileNetV4 (the only one timm
    dilates), the dilated full model for MobileViT, both loaded with ``model``'s weights."""
    if name in MOBILENETV4:
        reference = timm.create_model(name, features_only=True, output_stride=output_stride, out_indices=TAPS)
        head = ("conv_head.", "norm_head.", "classifier.")
        reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(head)})
        with torch.no_grad():
            return reference.eval()(x)
    reference = timm.create_model(name, output_stride=output_stride)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        return reference.eval().forward_intermediates(x, indices=TAPS, intermediates_only=True)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_loads_timm_state_dict_and_matches_timm_features(upstream, output_stride: int) -> None:
    name, model, path = upstream
    ours = build_backbone(name, output_stride=output_stride, pretrained=path).eval()
    x = torch.randn(1, 3, 65, 97)  # odd: MobileViT resizes to whole patches and back
    expected_low, expected_out = _timm_features(name, model, output_stride, x)
    with torch.no_grad():
        features = ours(x)
    assert (features["low_level"] - expected_low).abs().max() < 1e-5
    assert (features["out"] - expected_out).abs().max() < 1e-5
    assert expected_out.shape[-2:] == (-(-65 // output_stride), -(-97 // output_stride))
    if output_stride == 32:  # and the plain classifier model's own forward, where no dilation is involved
        with torch.no_grad():
            plain = model.forward_intermediates(x, indices=TAPS, intermediates_only=True)
        assert (features["out"] - plain[1]).abs().max() < 1e-5


def test_reads_the_hubs_safetensors_file(upstream, tmp_path) -> None:
    from safetensors.torch import save_file

    name, model, _ = upstream
    path = tmp_path / "model.safetensors"  # what the Hugging Face hub serves for timm's weights
    save_file(model.state_dict(), path)
    ours = build_backbone(name, output_stride=32, pretrained=path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ours.state_dict().items())
    path.write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="model.safetensors: cannot read weights"):
        build_backbone(name, output_stride=32, pretrained=path)


def test_declares_timm_normalisation(upstream) -> None:
    name, model, _ = upstream
    ours = build_backbone(name, output_stride=32)
    assert ours.mean == tuple(model.pretrained_cfg["mean"]) and ours.std == tuple(model.pretrained_cfg["std"])
    assert name in ours.weights_source and model.pretrained_cfg["tag"] in ours.weights_source


@pytest.mark.parametrize("name", ["xception65", "mobilenetv4_conv_small", "mobilevit_xs"])
def test_fetch_failure_is_one_line_error(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = build_backbone(name)

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load this file")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError) as info:
        backbone.load_pretrained(True)
    message = str(info.value)
    assert "\n" not in message and name in message and "huggingface" in message


def test_importing_backbones_does_not_import_timm(repo_root) -> None:
    # Listing imports every family module: none of them may import timm before a timm backbone is built.
    code = ("import sys, backbones; n = len(backbones.list_backbones()); "
            "assert 'timm' not in sys.modules, 'timm imported'; print(n)")
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 20
