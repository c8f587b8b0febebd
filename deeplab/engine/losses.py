"""Training losses over labelled pixels; void (the ignore index) never counts.

A loss is one term or several joined by ``+`` and summed, each optionally scaled (``ce+3*dice``): ``ce``
(cross-entropy, optionally class-weighted and restricted to the hardest pixels, as TF DeepLab's
``top_k_percent_pixels``), ``focal``, and the region losses of segmentation_models_pytorch (``dice``,
``jaccard``, ``lovasz``, ``tversky``). smp's losses drop or zero void pixels themselves when given
``ignore_index``; a batch without labelled pixels gives 0 here (smp's focal loss would give NaN, its Lovasz loss
an empty tensor).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from datasets.image_files import IGNORE_INDEX

from ..errors import UserError

__all__ = ["LOSS_CHOICES", "LOSS_TERMS", "SegmentationLoss", "build_loss", "check_loss", "cross_entropy",
           "parse_loss", "segmentation_loss"]

LOSS_TERMS = ("ce", "focal", "dice", "jaccard", "lovasz", "tversky")
#: The combinations offered on the command line (any ``+``-joined set of distinct terms is accepted).
LOSS_CHOICES = ("ce", "focal", "ce+dice", "ce+jaccard", "ce+lovasz", "ce+tversky", "focal+dice", "focal+lovasz")


def cross_entropy(
    logits: torch.Tensor,
    masks: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    keep: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean over labelled pixels of ``weight[y] * CE``, or over the ``keep`` share of them with the largest loss.

    Weighted pixels are averaged by count, not by summed weight (TF DeepLab's convention), so the weights
    scale each class's pull rather than cancelling out within a batch. A batch with no labelled pixel gives 0.
    """
    per_pixel = F.cross_entropy(logits.float(), masks, weight=weight, ignore_index=ignore_index, reduction="none")
    losses = per_pixel[masks != ignore_index]
    if losses.numel() == 0:
        return per_pixel.sum() * 0.0
    if keep < 1.0:
        losses = losses.topk(max(1, math.ceil(keep * losses.numel())), sorted=False).values
    return losses.mean()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy averaged over labelled pixels; a batch with none gives 0, not NaN."""
    return cross_entropy(logits, masks)


def parse_loss(name: str) -> dict[str, float]:
    """``"ce+3*dice"`` -> ``{"ce": 1.0, "dice": 3.0}``: each term and its factor (1 unless written ``N*term``);
    an unknown or repeated term, or a factor that is not a positive number, is a UserError listing the choices."""
    terms: dict[str, float] = {}
    for part in name.lower().split("+"):
        factor_text, scaled, term = (piece.strip() for piece in part.rpartition("*"))
        factor = _positive(factor_text) if scaled else 1.0
        if term and term not in LOSS_TERMS:
            _bad_loss(name, f"unknown term {term!r}")
        if not term or term in terms:
            _bad_loss(name, "a term is repeated or empty")
        if factor is None:
            _bad_loss(name, f"factor {factor_text!r} is not a positive number")
        terms[term] = factor
    return terms


def _bad_loss(name: str, problem: str) -> NoReturn:
    """Refuse the loss ``name`` in one line that lists the choices."""
    raise UserError(f"--loss {name}: {problem}; choose one of {', '.join(LOSS_CHOICES)} (or any '+'-joined set of "
                    f"{', '.join(LOSS_TERMS)}, each optionally scaled, e.g. 'ce+3*dice')")


def _positive(text: str) -> float | None:
    """``text`` as a finite number above 0, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


class SegmentationLoss(nn.Module):
    """The sum of ``terms`` (see :data:`LOSS_TERMS`; a mapping gives each term's factor) on float32 logits,
    void pixels excluded from every term.

    ``class_weights`` scale each class in the pixel terms (``ce``, ``focal``); the region terms already average
    over classes, each class counting once however few its pixels, so weighting them again would count a rare
    class twice (measured: it then paints its colour everywhere). ``ohem`` (a share in (0, 1]) keeps only the
    hardest labelled pixels in the cross-entropy term.
    """

    def __init__(self, terms: Sequence[str] | Mapping[str, float], *, num_classes: int,
                 class_weights: Sequence[float] | None = None, ohem: float | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
        if ohem is not None and not 0.0 < ohem <= 1.0:
            raise ValueError(f"ohem must be a share in (0, 1], got {ohem}")
        self.factors = dict(terms) if isinstance(terms, Mapping) else dict.fromkeys(terms, 1.0)
        self.terms, self.ignore_index, self.keep = tuple(self.factors), ignore_index, ohem or 1.0
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("weight", weight, persistent=False)
        self.smp_terms = nn.ModuleDict({t: _smp_loss(t, ignore_index, class_weights if t == "focal" else None)
                                        for t in self.terms if t != "ce"})

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if not (masks != self.ignore_index).any():
            return logits.sum() * 0.0
        total = logits.new_zeros(())
        for term, factor in self.factors.items():
            if term == "ce":
                value = cross_entropy(logits, masks, weight=self.weight, keep=self.keep,
                                      ignore_index=self.ignore_index)
            else:
                value = self.smp_terms[term](logits, masks)
            total = total + factor * value
        return total


def _smp_loss(term: str, ignore_index: int, class_weights: Sequence[float] | None) -> nn.Module:
    """segmentation_models_pytorch's multi-class loss ``term``, told the ignore index and any class weights."""
    from segmentation_models_pytorch import losses  # deferred: only these terms need smp

    weights = {"class_weights": list(class_weights)} if class_weights is not None else {}
    makers: dict[str, Callable[[], nn.Module]] = {
        "focal": lambda: losses.FocalLoss("multiclass", ignore_index=ignore_index, **weights),
        "dice": lambda: losses.DiceLoss("multiclass", ignore_index=ignore_index, **weights),
        "jaccard": lambda: losses.JaccardLoss("multiclass", ignore_index=ignore_index, **weights),
        # alpha < beta weighs misses above false alarms, the setting Salehi et al. (2017) found best for small
        # structures.
        "tversky": lambda: losses.TverskyLoss("multiclass", ignore_index=ignore_index, alpha=0.3, beta=0.7,
                                              **weights),
        "lovasz": lambda: losses.LovaszLoss("multiclass", ignore_index=ignore_index),
    }
    return makers[term]()


def check_loss(name: str, ohem: float | None = None) -> dict[str, float]:
    """The terms of ``name`` and their factors, after refusing (one line each) an unknown name or an ``ohem``
    it cannot use."""
    terms = parse_loss(name)
    if ohem is not None and not 0.0 < ohem <= 1.0:
        raise UserError(f"--ohem {ohem}: the share of hardest pixels kept must lie in (0, 1], e.g. 0.25")
    if ohem is not None and "ce" not in terms:
        raise UserError(f"--ohem {ohem}: hard-pixel mining selects cross-entropy pixels; use a loss with a 'ce' "
                        f"term (e.g. ce or ce+dice), not {name}")
    return terms


def build_loss(name: str, *, num_classes: int, class_weights: Sequence[float] | None = None,
               ohem: float | None = None) -> SegmentationLoss:
    """The training loss named ``name`` (e.g. ``ce``, ``ce+dice``); ``ohem`` needs a ``ce`` term."""
    return SegmentationLoss(check_loss(name, ohem), num_classes=num_classes, class_weights=class_weights, ohem=ohem)
