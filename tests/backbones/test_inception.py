"""Inception v1/v3 on torchvision's models: its state dicts (aux classifiers included) load strictly; v1 equals
torchvision's features wherever its pools already rounded up; every v3 module equals torchvision's, or contains
its output where padding was added; the weights' (x - 0.5) / 0.5 input is what we declare; wrong files name the
first mismatching tensor."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import GoogLeNet, Inception3

from backbones import WeightsError, build_backbone


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the named top-level modules during ``model``'s own forward pass."""
    captured: dict[str, torch.Tensor] = {}
    handles = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o.clone()))
               for n in names]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return captured


def _saved(model: nn.Module, folder: Path, name: str) -> tuple[nn.Module, Path]:
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def googlenet_file(tmp_path_factory, randomise_batchnorm) -> tuple[nn.Module, Path]:
    """torchvision's GoogLeNet as its ImageNet weights are used (aux classifiers, transform_input), saved."""
    model = GoogLeNet(aux_logits=True, transform_input=True, init_weights=False)
    return _saved(randomise_batchnorm(model), tmp_path_factory.mktemp("googlenet"), "googlenet")


@pytest.fixture(scope="module")
def inception3_file(tmp_path_factory, randomise_batchnorm) -> tuple[nn.Module, Path]:
    model = Inception3(aux_logits=True, transform_input=True, init_weights=False)
    return _saved(randomise_batchnorm(model), tmp_path_factory.mktemp("inception3"), "inception_v3")


def test_inception_v1_equals_torchvision_at_os32(googlenet_file) -> None:
    reference, path = googlenet_file
    ours = build_backbone("inception_v1", output_stride=32, pretrained=path).eval()
    pixels = torch.rand(2, 3, 64, 96)  # a multiple of 32: torchvision's ceil_mode pools round up here too
    expected = _outputs(reference, ["conv3", "inception5b"], (pixels - IMAGENET_MEAN) / IMAGENET_STD)
    with torch.no_grad():
        features = ours(_normalise(pixels, ours.mean, ours.std))
    assert (features["low_level"] - expected["conv3"]).abs().max() < 1e-5
    assert (features["out"] - expected["inception5b"]).abs().max() < 1e-5
    assert expected["inception5b"].abs().mean() > 1e-3


def test_inception_v1_odd_size_keeps_torchvision_in_the_corner(googlenet_file) -> None:
    reference, path = googlenet_file
    ours = build_backbone("inception_v1", output_stride=16, pretrained=path).eval()
    pixels = torch.rand(1, 3, 33, 49)  # stride-2 maps of 17 x 25: torchvision's pool gives 8 x 12, ours 9 x 13
    expected = _outputs(reference, ["conv3"], (pixels - IMAGENET_MEAN) / IMAGENET_STD)["conv3"]
    with torch.no_grad():
        low_level = ours(_normalise(pixels, ours.mean, ours.std))["low_level"]
    assert expected.shape[-2:] == (8, 12) and low_level.shape[-2:] == (9, 13)
    # conv3 (3x3, padded) reads our extra row and column where torchvision reads zeros: compare inside them.
    assert (low_level[..., :7, :11] - expected[..., :7, :11]).abs().max() < 1e-5


# How each module of ours relates to torchvision's on the same input (see backbones/inception.py).
V3_PADDED_SAME_SIZE = {"Conv2d_2a_3x3", "Conv2d_4a_3x3"}  # torchvision's = ours without the border
V3_ROUNDED_UP = {"Conv2d_1a_3x3", "maxpool1", "maxpool2", "Mixed_6a", "Mixed_7a"}  # = ours' top-left corner


def test_inception_v3_modules_equal_torchvision_where_unchanged(inception3_file) -> None:
    reference, path = inception3_file
    ours = build_backbone("inception_v3", output_stride=32, pretrained=path).eval()
    pixels = torch.rand(1, 3, 75, 75)
    x = _normalise(pixels, ours.mean, ours.std)
    # torchvision's transform_input maps ImageNet-normalised pixels to ours.
    assert (reference._transform_input((pixels - IMAGENET_MEAN) / IMAGENET_STD) - x).abs().max() < 1e-5
    names = [n for n, _ in ours.named_children()]
    assert len(names) == 18 and names[-1] == "Mixed_7c"
    with torch.no_grad():
        for name in names:
            theirs, y = getattr(reference, name)(x), getattr(ours, name)(x)
            if name in V3_PADDED_SAME_SIZE:
                assert y.shape[-2:] == x.shape[-2:]
                y = y[..., 1:-1, 1:-1]
            elif name in V3_ROUNDED_UP:
                assert y.shape[-1] == (x.shape[-1] + 1) // 2
                y = y[..., : theirs.shape[-2], : theirs.shape[-1]]
            assert y.shape == theirs.shape, name
            assert (y - theirs).abs().max() < 1e-5, name
            x = getattr(ours, name)(x)
    assert x.shape == (1, 2048, 3, 3)


def test_wrong_weights_name_the_first_mismatching_tensor(googlenet_file, inception3_file, tmp_path) -> None:
    _, googlenet_path = googlenet_file
    with pytest.raises(WeightsError) as info:
        build_backbone("inception_v3", pretrained=googlenet_path)
    assert "Conv2d_1a_3x3.conv.weight (32, 3, 3, 3) is not in the file" in str(info.value)
    state = torch.load(googlenet_path, weights_only=True)
    state["inception4a.branch2.1.conv.weight"] = torch.zeros(208, 96, 5, 5)
    narrow = tmp_path / "5x5.pth"
    torch.save(state, narrow)
    with pytest.raises(WeightsError) as info:
        build_backbone("inception_v1", pretrained=narrow)
    message = str(info.value)
    assert message.startswith(f"{narrow}: ") and "\n" not in message
    expected = "inception4a.branch2.1.conv.weight is (208, 96, 5, 5) in the file but (208, 96, 3, 3) in the model"
    assert expected in message
