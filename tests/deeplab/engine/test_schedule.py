"""The DeepLab optimisation recipe: poly decay after linear warm-up, per-group rates, no decay on BN/bias."""
from __future__ import annotations

from itertools import pairwise

import pytest
from torch import nn

from deeplab.engine.schedule import build_optimizer, build_scheduler, default_warmup_steps, lr_factor


class TinyNet(nn.Module):
    """A 'backbone' conv+BN and a 'head' conv, named like DeepLabV3Plus's top-level parts."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.decoder = nn.Conv2d(4, 2, 1)


def test_lr_factor_warms_up_linearly_then_decays_poly():
    factors = [lr_factor(s, total_steps=100, warmup_steps=10) for s in range(100)]
    assert factors[:3] == pytest.approx([0.1 * (1 - 0 / 100) ** 0.9, 0.2 * (1 - 1 / 100) ** 0.9, 0.3 * 0.98**0.9])
    assert factors[20] == pytest.approx((1 - 20 / 100) ** 0.9)
    assert max(factors) == pytest.approx(factors[9])
    assert all(a > b for a, b in pairwise(factors[9:]))
    assert 0 < factors[-1] < 0.02


def test_scheduler_follows_lr_factor_for_every_group():
    model = TinyNet()
    optimizer = build_optimizer(model, lr=0.1, weight_decay=1e-4, backbone_lr_scale=0.1)
    scheduler = build_scheduler(optimizer, total_steps=50, warmup_steps=5)
    for step in range(50):
        factor = lr_factor(step, total_steps=50, warmup_steps=5)
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        assert lrs["head"] == pytest.approx(0.1 * factor)
        assert lrs["backbone"] == pytest.approx(0.01 * factor)
        optimizer.step()
        scheduler.step()


def test_optimizer_skips_weight_decay_on_bn_and_bias():
    model = TinyNet()
    optimizer = build_optimizer(model, lr=0.01, weight_decay=5e-4)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert optimizer.defaults["momentum"] == 0.9
    ids = lambda name: {id(p) for p in groups[name]["params"]}  # noqa: E731
    assert ids("backbone") == {id(model.backbone[0].weight)}
    assert ids("backbone_no_decay") == {id(model.backbone[1].weight), id(model.backbone[1].bias)}
    assert ids("head") == {id(model.decoder.weight)} and ids("head_no_decay") == {id(model.decoder.bias)}
    assert groups["head"]["weight_decay"] == 5e-4 and groups["head_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0


def test_default_warmup_is_short():
    assert default_warmup_steps(30000) == 500 and default_warmup_steps(300) == 15 and default_warmup_steps(5) == 0
