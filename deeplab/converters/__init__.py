"""Checkpoints of other DeepLabV3+ projects converted to ours: one module per project, detection from tensor
names, and the importer that checks every shape and writes a plain-data checkpoint."""
from __future__ import annotations

from .base import Project
from .detect import PROJECTS, detect_project
from .importer import CITYSCAPES_CLASSES, ImportedCheckpoint, import_checkpoint, write_checkpoint

__all__ = [
    "CITYSCAPES_CLASSES", "PROJECTS", "ImportedCheckpoint", "Project", "detect_project",
    "import_checkpoint", "write_checkpoint",
]
