"""Run state: RNGs round-trip through a weights_only checkpoint; a resume into a longer schedule takes its lr."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from deeplab import build_model
from deeplab.engine.schedule import build_optimizer, build_scheduler, lr_factor
from deeplab.engine.state import capture_rng_state, restore_rng_state, restore_training_state, seed_everything, training_state


def test_rng_state_round_trips_through_weights_only_save():
    seed_everything(5)
    state = capture_rng_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_resume_into_a_longer_schedule_uses_its_learning_rate():
    model = build_model(num_classes=2, width_mult=0.35)
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, backbone_lr_scale=1.0)
    scheduler = build_scheduler(optimizer, total_steps=3, warmup_steps=0)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0  # the short schedule has ended
    ckpt = training_state(model, optimizer=optimizer, scheduler=scheduler, scaler=None, step=3, samples=6,
                                   best_miou=0.5, scores=None, class_names=["a", "b"], run_args={})
    longer_optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, backbone_lr_scale=1.0)
    longer = build_scheduler(longer_optimizer, total_steps=10, warmup_steps=0)
    step, best = restore_training_state(ckpt, model=model, optimizer=longer_optimizer, scheduler=longer)
    expected = 0.1 * lr_factor(3, total_steps=10, warmup_steps=0)
    assert (step, best) == (3, 0.5) and expected > 0
    assert all(group["lr"] == pytest.approx(expected) for group in longer_optimizer.param_groups)


def test_resume_takes_this_runs_learning_rate_and_weight_decay():
    model = build_model(num_classes=2, width_mult=0.35)
    optimizer = build_optimizer(model, lr=0.1, weight_decay=1e-4, backbone_lr_scale=1.0)
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=0)
    optimizer.step()
    scheduler.step()
    ckpt = training_state(model, optimizer=optimizer, scheduler=scheduler, scaler=None, step=1, samples=2,
                          best_miou=0.5, scores=None, class_names=["a", "b"], run_args={})
    lowered = build_optimizer(model, lr=0.01, weight_decay=0.1, backbone_lr_scale=0.5)
    lowered_scheduler = build_scheduler(lowered, total_steps=10, warmup_steps=0)
    restore_training_state(ckpt, model=model, optimizer=lowered, scheduler=lowered_scheduler)
    factor = lr_factor(1, total_steps=10, warmup_steps=0)
    assert [group["lr"] for group in lowered.param_groups] == pytest.approx([0.005 * factor] * 2 + [0.01 * factor] * 2)
    assert [group["weight_decay"] for group in lowered.param_groups] == [0.1, 0.0, 0.1, 0.0]
    lowered_scheduler.step()
    assert lowered.param_groups[-1]["lr"] == pytest.approx(0.01 * lr_factor(2, total_steps=10, warmup_steps=0))
