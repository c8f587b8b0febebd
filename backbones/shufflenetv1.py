"""ShuffleNetV1 feature extractors: the paper's stage table with pointwise group convs and channel shuffle (no
upstream weights).

The ``"low_level"`` tap is the stem's max-pool (stride 4, 24 channels at width 1.0), as for ShuffleNetV2; ``"out"``
is the last unit of stage 4. Widths other than 1.0 follow the authors' reference code (Megvii's ShuffleNet-Series):
every channel count scales, except the stem's, which stays 24 until the 2x model's 48 (0.5x: 12).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.shufflenetv2 import channel_shuffle
from torchvision.ops.misc import Conv2dNormActivation

from .base import Backbone, FeatureInfo, dilate_for_output_stride
from .registry import register_backbone

__all__ = ["ShuffleNetV1Backbone", "ShuffleNetV1Unit"]

# Output channels of stages 2-4 at width 1.0 per number of groups (Zhang et al., Table 1).
_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                   8: (384, 768, 1536)}
_STAGE_REPEATS = (4, 8, 4)  # one strided unit, then 3, 7, 3 stride-1 units
_STEM_CHANNELS = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


class ShuffleNetV1Unit(nn.Module):
    """ShuffleNet unit (Fig. 2b/c): 1x1 group conv, channel shuffle, 3x3 depthwise (carrying the stride), 1x1 group
    conv; added to the input at stride 1, concatenated with the input's 3x3 average pool at stride 2."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, stride: int,
                 first_groups: int | None = None) -> None:
        super().__init__()
        self.groups = groups
        self.concatenate = stride > 1  # kept apart from the conv's stride, which dilation may turn into 1
        mid = out_channels // 4
        branch_out = out_channels - in_channels if self.concatenate else out_channels
        self.compress = Conv2dNormActivation(in_channels, mid, 1, groups=first_groups or groups)
        self.depthwise = Conv2dNormActivation(mid, mid, 3, stride=stride, groups=mid, activation_layer=None)
        self.expand = Conv2dNormActivation(mid, branch_out, 1, groups=groups, activation_layer=None)
        self.shortcut = nn.AvgPool2d(3, stride, 1) if self.concatenate else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.compress(x)
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        y = self.expand(self.depthwise(y))
        if self.concatenate:
            return F.relu(torch.cat((self.shortcut(x), y), 1))
        return F.relu(x + y)


class ShuffleNetV1Backbone(Backbone):
    """ShuffleNetV1 (Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
    Devices", CVPR 2018) with ``groups`` pointwise groups at width ``width_mult`` (the paper's "ShuffleNet s x")."""

    def __init__(self, *, output_stride: int = 16, groups: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        if groups not in _STAGE_CHANNELS or width_mult not in _STEM_CHANNELS:
            raise ValueError(f"ShuffleNetV1 needs groups in {sorted(_STAGE_CHANNELS)} and width_mult in "
                             f"{sorted(_STEM_CHANNELS)}, got groups={groups}, width_mult={width_mult}")
        self.groups, self.width_mult = groups, width_mult
        channels = _STEM_CHANNELS[width_mult]
        self.conv1 = Conv2dNormActivation(3, channels, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for stage, (width, repeats) in enumerate(zip(_STAGE_CHANNELS[groups], _STAGE_REPEATS)):
            width = int(width * width_mult)
            # Stage 2's first pointwise conv is not grouped: its input has too few channels (Sec. 3.3).
            units = [ShuffleNetV1Unit(channels, width, groups=groups, stride=2,
                                      first_groups=1 if stage == 0 else None)]
            units += [ShuffleNetV1Unit(width, width, groups=groups, stride=1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            channels = width
        self.stage2, self.stage3, self.stage4 = stages
        dilate_for_output_stride([self.stage3, self.stage4], [self.stage4], output_stride)
        self.feature_info = {
            "low_level": FeatureInfo(self.conv1.out_channels, 4),
            "out": FeatureInfo(channels, output_stride),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level = self.maxpool(self.conv1(x))
        return {"low_level": low_level, "out": self.stage4(self.stage3(self.stage2(low_level)))}


def _variant(groups: int, width_mult: float = 1.0) -> type[ShuffleNetV1Backbone]:
    """A subclass bound to one (groups, width), so errors and state dicts name the variant."""
    width = "" if width_mult == 1.0 else f"X{width_mult:.1f}".replace(".", "_")
    name = f"ShuffleNetV1G{groups}{width}"

    def __init__(self: ShuffleNetV1Backbone, *, output_stride: int = 16) -> None:
        ShuffleNetV1Backbone.__init__(self, output_stride=output_stride, groups=groups, width_mult=width_mult)

    attributes = {"__doc__": f"ShuffleNetV1 {width_mult}x, g = {groups}.", "__module__": __name__,
                  "__init__": __init__}
    return type(name, (ShuffleNetV1Backbone,), attributes)


ShuffleNetV1G1 = register_backbone("shufflenetv1_g1")(_variant(1))
ShuffleNetV1G2 = register_backbone("shufflenetv1_g2")(_variant(2))
ShuffleNetV1G3 = register_backbone("shufflenetv1_g3")(_variant(3))
ShuffleNetV1G4 = register_backbone("shufflenetv1_g4")(_variant(4))
ShuffleNetV1G8 = register_backbone("shufflenetv1_g8")(_variant(8))
ShuffleNetV1G3X0_5 = register_backbone("shufflenetv1_g3_x0_5")(_variant(3, 0.5))
ShuffleNetV1G3X1_5 = register_backbone("shufflenetv1_g3_x1_5")(_variant(3, 1.5))
ShuffleNetV1G3X2_0 = register_backbone("shufflenetv1_g3_x2_0")(_variant(3, 2.0))
