"""Unit tests of the training library: schedule, optimizer groups, sampler, loss, RNG state, metrics log."""
from __future__ import annotations

import io
import json
import random
from itertools import islice, pairwise

import numpy as np
import pytest
import torch
from torch import nn

from deeplab import build_model, training
from deeplab.errors import UserError
from deeplab.checkpoint import check_writable
from deeplab.evaluation import resolve_device
from deeplab.schedule import build_optimizer, build_scheduler, default_warmup_steps, lr_factor
from deeplab.training_log import MetricsLog, plot_curves


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


def test_sampler_resumed_mid_epoch_continues_the_same_stream():
    full = list(islice(training.SeededSampler(7, seed=3), 30))
    assert sorted(i for i, _ in full[:7]) == list(range(7))  # each epoch is a permutation
    assert [i for i, _ in full[:7]] != [i for i, _ in full[7:14]]  # reshuffled every epoch
    assert list(islice(training.SeededSampler(7, seed=3, start=11), 19)) == full[11:]
    assert list(islice(training.SeededSampler(7, seed=4), 30)) != full


def test_segmentation_loss_ignores_void_and_is_zero_without_labels():
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.randint(0, 3, (2, 4, 4))
    expected = nn.functional.cross_entropy(logits, masks)
    assert training.segmentation_loss(logits, masks) == pytest.approx(expected.item(), rel=1e-5)
    masks[0] = 255
    assert training.segmentation_loss(logits, masks) == pytest.approx(
        nn.functional.cross_entropy(logits[1:], masks[1:]).item(), rel=1e-5)
    assert training.segmentation_loss(logits, torch.full_like(masks, 255)).item() == 0.0


def test_rng_state_round_trips_through_weights_only_save():
    training.seed_everything(5)
    state = training.capture_rng_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    buffer.seek(0)
    training.restore_rng_state(torch.load(buffer, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_amp_is_cuda_only():
    cpu = torch.device("cpu")
    assert training.resolve_amp("auto", cpu) is None and training.resolve_amp("off", cpu) is None
    with pytest.raises(UserError, match="CUDA"):
        training.resolve_amp("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            resolve_device("cuda")
    assert resolve_device("cpu") == cpu


def test_metrics_log_reset_truncates_and_survives_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(1, 6):
        log.append({"step": step, "loss": 1.0 / step})
    with log.path.open("a") as f:
        f.write('{"step": 6, "lo')  # a write cut off by a crash
    assert [r["step"] for r in log.read()] == [1, 2, 3, 4, 5]
    log.reset(keep_until=3)
    log.append({"step": 4, "loss": 0.1, "miou": 0.5})
    assert [json.loads(line)["step"] for line in log.path.read_text().splitlines()] == [1, 2, 3, 4]
    plot_curves(log.read(), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_writable_rejects_a_path_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to the output folder"):
        check_writable(tmp_path / "file" / "out")
    assert check_writable(tmp_path / "new" / "out").is_dir()


def test_resume_into_a_longer_schedule_uses_its_learning_rate():
    model = build_model(num_classes=2, width_mult=0.35)
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, backbone_lr_scale=1.0)
    scheduler = build_scheduler(optimizer, total_steps=3, warmup_steps=0)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0  # the short schedule has ended
    ckpt = training.training_state(model, optimizer=optimizer, scheduler=scheduler, scaler=None, step=3,
                                   best_miou=0.5, scores=None, class_names=["a", "b"], run_args={})
    longer_optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, backbone_lr_scale=1.0)
    longer = build_scheduler(longer_optimizer, total_steps=10, warmup_steps=0)
    step, best = training.restore_training_state(ckpt, model=model, optimizer=longer_optimizer, scheduler=longer)
    expected = 0.1 * lr_factor(3, total_steps=10, warmup_steps=0)
    assert (step, best) == (3, 0.5) and expected > 0
    assert all(group["lr"] == pytest.approx(expected) for group in longer_optimizer.param_groups)
