"""Freezing for fine-tuning: frozen BatchNorm keeps its statistics in training mode; early stages stop at the
stride-4 tap of any backbone."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deeplab.engine.freeze import freeze_batchnorm, freeze_early_stages
from deeplab.models import build_model


def test_frozen_batchnorm_keeps_statistics_in_training_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    model.train()
    model(torch.randn(4, 3, 8, 8) * 3 + 1)  # move the statistics away from their initial values
    keys = list(model.state_dict())
    assert freeze_batchnorm(model) == 2
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    out.square().mean().backward()
    for key, value in model.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert list(model.state_dict()) == keys
    assert not model[1].weight.requires_grad and model[1].weight.grad is None
    assert model[0].weight.grad is not None
    model.eval()
    assert torch.allclose(model(x), out)  # training mode normalised with the running statistics, as eval does


def test_freeze_batchnorm_can_leave_the_affine_parameters_trainable() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    freeze_batchnorm(model, affine=False)
    model.train()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model[1].weight.grad is not None and int(model[1].num_batches_tracked) == 0


@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenetv2_x0_5"])
def test_freeze_early_stages_stops_at_the_low_level_tap(name: str) -> None:
    model = build_model(backbone=name, num_classes=3)
    before = copy.deepcopy(model.state_dict())
    frozen = freeze_early_stages(model.backbone)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert 0 < frozen < len(list(model.backbone.parameters()))
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    model.train()
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.randint(0, 3, (2, 64, 64))).backward()
    optimizer.step()
    low_level = model.backbone(torch.randn(1, 3, 32, 32))["low_level"]
    assert not low_level.requires_grad  # nothing up to the tap can learn
    after = model.state_dict()
    early = [k for k, p in model.named_parameters() if not p.requires_grad]
    assert early and all(torch.equal(before[k], after[k]) for k in early)
    early_bn = [k.rsplit(".", 1)[0] + ".running_mean" for k in early if k.rsplit(".", 1)[0] + ".running_mean" in after]
    assert early_bn and all(torch.equal(before[k], after[k]) for k in early_bn)
    assert not torch.equal(before["decoder.classifier.weight"], after["decoder.classifier.weight"])
    late_bn = [k for k in after if k.endswith("running_mean") and k.startswith("backbone.") and k not in early_bn]
    assert late_bn and any(not torch.equal(before[k], after[k]) for k in late_bn)
