"""Whole-split evaluation of an engine or a model over (images, masks) batches."""
from __future__ import annotations

import copy

import pytest
import torch

from deeplab.evaluation import evaluate
from deeplab.models import build_model


def test_a_model_in_training_mode_is_refused_before_it_changes(randomise_batchnorm) -> None:
    """Scored right after training, a model left in training mode gave batch-statistics scores and moved its
    BatchNorm running statistics on the validation images."""
    model = randomise_batchnorm(build_model(num_classes=3, width_mult=0.25)).train()
    state = copy.deepcopy(model.state_dict())
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32)))]
    with pytest.raises(ValueError, match=r"^engine: a model in training mode.*pass model.eval\(\)"):
        evaluate(model, batches, num_classes=3)
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in state.items())
    assert int(evaluate(model.eval(), batches, num_classes=3).matrix.sum()) == 2 * 32 * 32
