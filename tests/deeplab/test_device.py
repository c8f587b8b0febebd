"""Device choice: auto picks what exists; asking for CUDA without it is one line, not a crash later."""
from __future__ import annotations

import pytest
import torch

from deeplab.device import resolve_device
from deeplab.errors import UserError


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "CPU", "cuda0"])
def test_a_name_that_is_no_device_is_one_line(name):
    with pytest.raises(UserError, match=rf"^--device {name}: not a device; use auto, cpu or cuda"):
        resolve_device(name)
