"""The network: conv blocks, ASPP, decoder and their DeepLabV3+ assembly on a registered backbone."""
from __future__ import annotations

from .aspp import ASPP, default_atrous_rates
from .decoder import Decoder
from .deeplabv3plus import DeepLabV3Plus, build_model, config_at_output_stride

__all__ = ["ASPP", "Decoder", "DeepLabV3Plus", "build_model", "config_at_output_stride", "default_atrous_rates"]
