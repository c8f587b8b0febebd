"""Shared fixtures: the real VOC samples beside the checkout, deterministic seeds, two CPU threads."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
VOC_MINI = REPO_ROOT.parent / "shared" / "data" / "voc_mini"

torch.set_num_threads(2)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI for updates on import


@pytest.fixture
def voc_mini() -> Path:
    """Folder holding ``VOCdevkit/VOC2012`` with eight real VOC val images, their labels and reference predictions."""
    assert (VOC_MINI / "VOCdevkit" / "VOC2012").is_dir(), f"missing {VOC_MINI}"
    return VOC_MINI


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
