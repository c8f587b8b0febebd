"""Inference-time simplification: fold eval-mode BatchNorm into the convolution that feeds it.

Pairs are found by running an example through the model and matching each BatchNorm's input tensor to
the convolution that produced it, so any backbone's layout works (``Sequential`` blocks, ``conv``/``bn``
attributes) without knowing its module names. The folded copy is for inference only.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .tta import require_finite

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """Copy of ``model`` in eval mode with each Conv2d -> BatchNorm2d pair merged into one Conv2d.

    ``example`` is a small input used to discover the pairs and to check the folded copy gives the same
    output; a mismatch (a conv output also read elsewhere) raises ``RuntimeError`` instead of a wrong model.
    ``model`` itself is left as it is (a model in training mode stays in it).
    """
    folded = copy.deepcopy(model).eval()
    with torch.inference_mode():
        expected = folded(example)
    require_finite(expected)
    pairs = _conv_bn_pairs(folded, example)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _set_submodule(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _set_submodule(folded, bn_name, nn.Identity())
    with torch.inference_mode():
        got = folded(example)
    tolerance = 1e-4 * max(1.0, float(expected.abs().max()))
    if not torch.allclose(expected, got, rtol=1e-3, atol=tolerance):
        raise RuntimeError(f"BatchNorm folding changed the output (max diff {float((expected - got).abs().max()):.3g})")
    return folded


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """Names of (conv, bn) where the plain BatchNorm2d reads exactly the conv's output tensor."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # keeps outputs alive so ids stay unique
    pairs: dict[str, str] = {}

    def after_conv(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            produced[id(output)] = (name, output)
        return hook

    def before_bn(name: str):
        def hook(_module: nn.Module, inputs: tuple) -> None:
            source = produced.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                pairs[name] = source[0]
        return hook

    handles = []
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            handles.append(module.register_forward_hook(after_conv(name)))
        # Exact type: subclasses such as timm's BatchNormAct2d also apply an activation we must keep.
        elif type(module) is nn.BatchNorm2d:
            handles.append(module.register_forward_pre_hook(before_bn(name)))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # A conv feeding two BatchNorms cannot absorb both.
    convs = list(pairs.values())
    return [(conv, bn) for bn, conv in pairs.items() if convs.count(conv) == 1]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, module)
