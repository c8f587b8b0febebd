"""Training losses: every term and combination is finite, blind to void pixels (neither the loss nor its gradient
changes with the logits there) and passes gradient to labelled pixels; weights and hard-pixel mining match
hand computations; bad names are one line listing the choices."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deeplab.engine.losses import LOSS_CHOICES, LOSS_TERMS, build_loss, cross_entropy, parse_loss, segmentation_loss
from deeplab.errors import UserError

ALL_LOSSES = sorted(set(LOSS_CHOICES) | set(LOSS_TERMS) | {"ce+dice+lovasz", "ce+3*dice"})
CLASSES = 4


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and masks of 2 images, every class present, a band of void pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, CLASSES, 8, 8, generator=generator)
    masks = torch.randint(0, CLASSES, (2, 8, 8), generator=generator)
    masks[:, 2:4, :] = 255
    masks[1, 6:, :5] = 255
    return logits, masks


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("weighted", [False, True])
def test_every_loss_is_finite_ignores_void_and_passes_gradient(name: str, weighted: bool):
    weights = [0.5, 1.0, 2.0, 4.0] if weighted else None
    ohem = 0.5 if "ce" in name.split("+") else None
    loss_fn = build_loss(name, num_classes=CLASSES, class_weights=weights, ohem=ohem)
    logits, masks = batch()
    void = (masks == 255).unsqueeze(1).expand_as(logits)
    changed = torch.where(void, torch.randn_like(logits) * 10, logits)  # only void pixels differ

    results = []
    for values in (logits, changed):
        leaf = values.clone().requires_grad_(True)
        loss = loss_fn(leaf, masks)
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    (loss, grad), (loss_changed, grad_changed) = results
    assert torch.isfinite(loss) and loss.item() > 0
    assert loss_changed.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    assert torch.count_nonzero(grad[void]) == 0 and torch.count_nonzero(grad_changed[void]) == 0
    assert torch.allclose(grad[~void], grad_changed[~void], atol=1e-6)
    assert grad[~void].abs().sum() > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_a_batch_without_labels_gives_zero_with_a_gradient(name: str):
    logits = torch.randn(1, CLASSES, 4, 4, requires_grad=True)
    loss = build_loss(name, num_classes=CLASSES)(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_plain_loss_is_pytorch_cross_entropy_over_labelled_pixels():
    logits, masks = batch()
    expected = nn.functional.cross_entropy(logits, masks, ignore_index=255)
    assert segmentation_loss(logits, masks).item() == pytest.approx(expected.item(), rel=1e-5)
    assert build_loss("ce", num_classes=CLASSES)(logits, masks).item() == pytest.approx(expected.item(), rel=1e-5)


def test_weighted_cross_entropy_averages_weighted_pixels_by_count():
    logits, masks = batch()
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    log_p = torch.log_softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, CLASSES).numpy()
    target = masks.reshape(-1).numpy()
    keep = target != 255
    per_pixel = -log_p[keep, target[keep]] * weights.numpy()[target[keep]]
    assert cross_entropy(logits, masks, weight=weights).item() == pytest.approx(per_pixel.mean(), rel=1e-5)


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5, 1.0])
def test_ohem_keeps_the_asked_share_of_hardest_labelled_pixels(share: float):
    logits, masks = batch()
    log_p = torch.log_softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, CLASSES).numpy()
    target = masks.reshape(-1).numpy()
    labelled = target != 255
    per_pixel = np.sort(-log_p[labelled, target[labelled]])[::-1]
    kept = int(np.ceil(share * labelled.sum()))
    expected = per_pixel[:kept].mean()
    assert cross_entropy(logits, masks, keep=share).item() == pytest.approx(expected, rel=1e-5)
    assert build_loss("ce", num_classes=CLASSES, ohem=share)(logits, masks).item() == pytest.approx(expected, rel=1e-5)
    # Exactly `kept` pixels get a gradient: the mined ones, never void ones.
    leaf = logits.clone().requires_grad_(True)
    cross_entropy(leaf, masks, keep=share).backward()
    assert int((leaf.grad.abs().sum(dim=1) > 0).sum()) == kept


def test_parse_loss_and_bad_names():
    assert parse_loss("CE+Dice") == {"ce": 1.0, "dice": 1.0}
    assert parse_loss("ce + 0.5*Tversky") == {"ce": 1.0, "tversky": 0.5}
    for bad in ("cross_entropy", "ce+dice+dice", "ce+dice+2*dice", "ce+", "dice+boundary", "ce+*dice", "ce+0*dice",
                "ce+-1*dice", "ce+x*dice", "ce+nan*dice"):
        with pytest.raises(UserError, match=r"--loss .*choose one of ce, focal, ce\+dice"):
            parse_loss(bad)
    with pytest.raises(UserError, match="--ohem 0.25: .*'ce' term"):
        build_loss("dice", num_classes=3, ohem=0.25)
    with pytest.raises(UserError, match=r"--ohem 1.5: .*\(0, 1\]"):
        build_loss("ce", num_classes=3, ohem=1.5)


def test_factors_scale_their_terms():
    logits, masks = batch()
    ce, dice = (build_loss(name, num_classes=CLASSES)(logits, masks).item() for name in ("ce", "dice"))
    scaled = build_loss("0.5*ce+3*dice", num_classes=CLASSES)(logits, masks).item()
    assert scaled == pytest.approx(0.5 * ce + 3 * dice, rel=1e-5)


def test_class_weights_scale_the_pixel_terms_only():
    logits, masks = batch()
    weights = [0.5, 1.0, 2.0, 4.0]
    for name in ("ce", "focal", "dice", "jaccard", "lovasz", "tversky"):
        plain = build_loss(name, num_classes=CLASSES)(logits, masks).item()
        weighted = build_loss(name, num_classes=CLASSES, class_weights=weights)(logits, masks).item()
        assert (weighted != pytest.approx(plain, rel=1e-4)) == (name in ("ce", "focal")), name
