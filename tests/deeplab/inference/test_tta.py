"""Test-time views: each undone exactly, and the eight orientations averaged as torch.rot90 and transposes give."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplab.inference.tta import predict_probabilities, tta_views


def _engine() -> nn.Module:
    """A fixed random conv: no symmetry, so each view's scores differ and a view undone wrongly shows."""
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, kernel_size=3, padding=1).eval()


@pytest.mark.parametrize("flip, any_orientation, count", [(False, False, 1), (True, False, 2), (False, True, 8),
                                                          (True, True, 8)])
def test_each_view_is_undone_exactly_and_the_views_differ(flip, any_orientation, count):
    x = torch.randn(2, 3, 5, 7)
    views = tta_views(flip=flip, any_orientation=any_orientation)
    seen = [view.apply(x) for view in views]
    assert len(views) == count
    assert all(torch.equal(view.undo(shown), x) for view, shown in zip(views, seen))
    assert len({(tuple(s.shape), tuple(s.flatten().tolist())) for s in seen}) == count


def test_any_orientation_averages_the_eight_quarter_turns_of_the_image_and_of_its_transpose():
    engine, x = _engine(), torch.randn(1, 3, 6, 9)
    with torch.no_grad():
        turned = sum(torch.rot90(engine(torch.rot90(x.transpose(-2, -1), k, (-2, -1))).softmax(1), -k, (-2, -1))
                     .transpose(-2, -1) for k in range(4))
        plain = sum(torch.rot90(engine(torch.rot90(x, k, (-2, -1))).softmax(1), -k, (-2, -1)) for k in range(4))
        ours = predict_probabilities(engine, x, any_orientation=True)
        assert torch.allclose(ours, (plain + turned) / 8, atol=1e-6)
        assert not torch.allclose(ours, predict_probabilities(engine, x, flip=True), atol=1e-3)
        assert torch.equal(ours, predict_probabilities(engine, x, flip=True, any_orientation=True))
