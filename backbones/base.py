"""The backbone contract: declared feature maps, output stride by dilation, upstream weight loading.

A backbone is an ``nn.Module`` that declares, before it runs, two feature maps in ``feature_info``:
``"low_level"`` (stride 4) and ``"out"`` (stride = ``output_stride``), and whose ``forward(x)`` returns
``{"low_level": Tensor, "out": Tensor}``. It also declares its input normalisation (``mean``/``std``) and
how to fetch its ImageNet weights, so transforms and tools never assume global constants.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Mapping

import torch
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OUTPUT_STRIDES",
    "Backbone",
    "FeatureInfo",
    "SequentialBackbone",
    "WeightsError",
    "dilate_for_output_stride",
    "read_state_dict",
    "without_wrapper_prefixes",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_STRIDES = (8, 16, 32)


class WeightsError(Exception):
    """Weights that cannot be fetched, read or loaded; the message is one line naming the file or source."""


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and stride (relative to the input) of one feature map a backbone returns."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """Base class of every feature extractor; subclasses fill ``feature_info`` in ``__init__``."""

    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD
    #: Human-readable origin of the ImageNet weights (``None``: no upstream weights exist).
    weights_source: ClassVar[str | None] = None
    #: Upstream state-dict key prefixes we do not keep (classifier head and the like).
    unused_upstream_prefixes: ClassVar[tuple[str, ...]] = ()
    #: torchvision model name whose ``IMAGENET1K_V1`` weights fit this backbone (``None``: not torchvision's).
    upstream: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.feature_info: dict[str, FeatureInfo] = {}

    @classmethod
    def smallest_training_crop(cls, output_stride: int) -> int:
        """Smallest crop side that trains: the deepest map must be at least 2x2, since BatchNorm cannot normalise
        a 1x1 map (batch 1 raises, batches of 2-3 gave NaN losses within 10 steps)."""
        return output_stride + 1

    def imagenet_state_dict(self) -> Mapping[str, torch.Tensor]:
        """Fetch the upstream ImageNet state dict (downloads on a connected machine)."""
        if self.upstream is None:
            raise WeightsError(f"{type(self).__name__} has no upstream ImageNet weights; train it from scratch")
        from torchvision.models import get_model_weights  # deferred: torchvision's import pulls in torch._dynamo

        return get_model_weights(self.upstream).IMAGENET1K_V1.get_state_dict(progress=True)

    def load_pretrained(self, pretrained: bool | str | Path) -> None:
        """Load ImageNet weights (``True``) or an upstream state dict from a local file (a path), strictly."""
        if pretrained is True:
            state, origin = self._download_imagenet(), str(self.weights_source)
        else:
            state, origin = read_state_dict(pretrained), str(pretrained)
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if not k.startswith(self.unused_upstream_prefixes)}
        kept = {**_batch_counters(own), **kept}
        mismatch = _describe_mismatch(own, kept)
        prefix = _nesting_prefix(own, state) if mismatch else None
        if prefix:
            raise WeightsError(
                f"{origin}: holds a whole model whose {prefix!r} part is a {type(self).__name__}, not the backbone's "
                "own state dict; to start from a DeepLabV3+ checkpoint use --init-from (or pass the upstream "
                "classification model's weights)")
        if mismatch:
            raise WeightsError(f"{origin}: not a {type(self).__name__} state dict: {mismatch}")
        try:
            self.load_state_dict(kept, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{origin}: weights do not fit {type(self).__name__}: {_one_line(exc)}") from None

    def _download_imagenet(self) -> Mapping[str, torch.Tensor]:
        try:
            return self.imagenet_state_dict()
        except WeightsError:
            raise
        except Exception as exc:  # network, hash and cache errors all mean the same to the user
            raise WeightsError(
                f"could not fetch ImageNet weights ({self.weights_source}): {_one_line(exc)}; download the file on "
                "a connected machine and pass its path instead (--pretrained-backbone FILE, or pretrained='FILE')"
            ) from None


class SequentialBackbone(Backbone):
    """A backbone whose blocks form one ``features`` Sequential, each block exposing ``out_channels``."""

    def _set_features(
        self, layers: list[nn.Module], *, low_level_end: int, stride16_start: int, stride32_start: int,
        output_stride: int, dilate_strided_block: bool = True,
    ) -> None:
        """Keep ``layers`` as ``features``, dilate them for ``output_stride`` and declare the two taps.

        ``features[:low_level_end]`` ends at stride 4; ``stride16_start``/``stride32_start`` index the first
        blocks that reach stride 16 and 32; ``out`` is the last block. ``dilate_strided_block``: see
        :func:`dilate_for_output_stride`.
        """
        self.features = nn.Sequential(*layers)
        self.low_level_end = low_level_end
        dilate_for_output_stride(self.features[stride16_start:], self.features[stride32_start:], output_stride,
                                 dilate_strided_block=dilate_strided_block)
        self.feature_info = {
            "low_level": FeatureInfo(self.features[low_level_end - 1].out_channels, 4),
            "out": FeatureInfo(self.features[-1].out_channels, output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.features[: self.low_level_end](x)
        return {"low_level": low_level, "out": self.features[self.low_level_end :](low_level)}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict saved with ``torch.save`` (plain or under a ``state_dict``/``model`` key, with or without
    DataParallel's ``module.`` prefix) or as ``.safetensors`` (the Hugging Face hub's format for timm's weights),
    safely."""
    path = Path(path)
    if path.is_dir():  # the folder the weights were downloaded into
        raise WeightsError(f"{path}: is a folder, not a weights file; pass the file in it")
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # installed with timm

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refusals, truncation and garbage all end here
        raise WeightsError(f"{path}: cannot read weights ({_one_line(exc)})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    return without_wrapper_prefixes(obj)


def without_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the prefixes a wrapped model gives every key: ``module.`` (DataParallel, DDP) and
    ``_orig_mod.`` (``torch.compile``), in either nesting."""
    state = dict(state)
    while state:
        prefix = next((p for p in ("module.", "_orig_mod.") if all(key.startswith(p) for key in state)), None)
        if prefix is None:
            break
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def dilate_for_output_stride(
    stride16: Iterable[nn.Module], stride32: Iterable[nn.Module], output_stride: int, *,
    dilate_strided_block: bool = True,
) -> None:
    """Trade the strides of late stages for dilation so features stop at ``output_stride``.

    ``stride16`` holds every module from the block that first reaches stride 16 to the last one used;
    ``stride32`` likewise from the block that reaches stride 32 (a suffix of ``stride16``). Each pass turns
    strided convs/pools into stride 1 and multiplies the dilation of spatial convs by 2, so parameter shapes,
    and hence ImageNet weights, are the same at every output stride. With ``dilate_strided_block=False`` a conv
    that loses its stride keeps its previous dilation and only the layers after it are dilated (the
    ``previous_dilation`` rule of torchvision's ResNet and timm, also used by published DeepLabV3+ MobileNetV2s).
    Pools lose their stride but are not dilated (as DeepLab did with VGG's last pools); they are padded by
    ``(kernel - 1) // 2`` to keep the size.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    passes = {32: [], 16: [stride32], 8: [stride32, stride16]}[output_stride]
    for modules in passes:
        for module in {id(m): m for top in modules for m in top.modules()}.values():
            _halve_stride_double_dilation(module, dilate_strided=dilate_strided_block)


def _halve_stride_double_dilation(module: nn.Module, *, dilate_strided: bool = True) -> None:
    if isinstance(module, nn.Conv2d):
        strided = module.stride != (1, 1)
        if strided:
            module.stride = (1, 1)
        kernel = module.kernel_size
        if kernel != (1, 1) and (dilate_strided or not strided):
            module.dilation = tuple(2 * d for d in module.dilation)
            module.padding = tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, kernel))
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and module.stride not in (1, (1, 1)):
        module.stride = 1
        module.padding = tuple((k - 1) // 2 for k in _pair(module.kernel_size))


def _batch_counters(ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own BatchNorm ``num_batches_tracked`` counters, for a file saved before PyTorch 0.4.1 added them
    (as ``load_state_dict`` does): they count steps, are no weights, and nothing reads them at a set momentum."""
    return {key: value for key, value in ours.items() if key.endswith(".num_batches_tracked")}


def _describe_mismatch(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor, in the model's order, that ``theirs`` lacks or holds with another shape (else the first
    one the model lacks), with counts of each kind; ``None`` when names and shapes all agree."""
    missing = [k for k in ours if k not in theirs]
    reshaped = [k for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    unexpected = [k for k in theirs if k not in ours]
    first = next((k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape), None)
    if first is None and not unexpected:
        return None
    if first is None:
        detail = f"the file's {unexpected[0]} {_shape(theirs[unexpected[0]])} has no place in the model"
    elif first in theirs:
        detail = f"{first} is {_shape(theirs[first])} in the file but {_shape(ours[first])} in the model"
    else:
        detail = f"the model's {first} {_shape(ours[first])} is not in the file"
    return (f"{detail} ({len(missing)} missing, {len(unexpected)} unexpected, {len(reshaped)} of another shape, "
            f"of {len(ours)} tensors)")


def _nesting_prefix(ours: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor]) -> str | None:
    """The prefix (such as ``backbone.``) under which ``theirs`` holds every tensor of ``ours``, if there is one."""
    first = next(iter(ours), None)
    for key in theirs:
        if first is not None and key.endswith("." + first):
            prefix = key[: -len(first)]
            if all(prefix + name in theirs and theirs[prefix + name].shape == ours[name].shape for name in ours):
                return prefix
    return None


def _shape(tensor: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, tensor.shape)) + ")"
