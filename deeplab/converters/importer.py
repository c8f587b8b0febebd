"""Turn a published DeepLabV3+ checkpoint into one of ours: detect, rename, fold, check every shape, save.

The result is a plain-data checkpoint (``model``, ``model_config``, ``class_names``, ``mean``, ``std``,
``source``) that every tool reads like one written by training.
"""
from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from datasets import VOC_CLASSES

from ..checkpoint import (
    bare_state_dict_message, check_class_name_list, check_output_stride, is_bare_state_dict, save_checkpoint,
    too_many_classes,
)
from ..errors import UserError
from ..tool_args import check_new_files
from ..models import DeepLabV3Plus
from .base import Project
from .detect import detect_project
from .reading import find_state_dict, read_foreign_checkpoint

__all__ = ["CITYSCAPES_CLASSES", "ImportedCheckpoint", "import_checkpoint", "write_checkpoint"]

# Cityscapes' 19 evaluation classes in train-id order, the order every Cityscapes model predicts.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
_DEFAULT_NAMES = {len(VOC_CLASSES): ("VOC", VOC_CLASSES), len(CITYSCAPES_CLASSES): ("Cityscapes", CITYSCAPES_CLASSES)}


@dataclass(frozen=True)
class ImportedCheckpoint:
    """A converted checkpoint (plain data, ready to save), the file it was read from and what was found on the way."""

    project: Project
    checkpoint: dict[str, Any]
    class_source: str
    path: Path

    @property
    def model_config(self) -> dict[str, Any]:
        return self.checkpoint["model_config"]

    @property
    def class_names(self) -> list[str]:
        return self.checkpoint["class_names"]


def import_checkpoint(
    path: str | Path,
    *,
    source: str | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    output_stride: int = 16,
) -> ImportedCheckpoint:
    """Read ``path`` (never running code), recognise its project (or take ``source``), convert its weights to our
    DeepLabV3+ and check each tensor's shape by loading them strictly. ``class_names`` and ``num_classes``, when
    given, must agree with the file's classifier; names default to VOC's (21 classes) or Cityscapes' (19)."""
    _check_arguments(output_stride, class_names, num_classes)
    path = Path(path)
    loaded = read_foreign_checkpoint(path)
    if isinstance(loaded, dict) and "model_config" in loaded:
        raise UserError(f"{path}: already a checkpoint of this project; use it as it is")
    state = find_state_dict(loaded, path)
    if source is None and is_bare_state_dict(state):
        raise UserError(bare_state_dict_message(path, "so there is nothing to convert"))
    project = detect_project(state, path, forced=source)
    try:
        found = project.num_classes(state)
    except (KeyError, IndexError):
        raise UserError(f"{path}: no classifier found; a {project.title} {project.architecture} ends in one") from None
    too_many = too_many_classes(found)
    if too_many:
        raise UserError(f"{path}: its classifier {too_many}")
    names, class_source = _class_names(path, found, class_names, num_classes)
    config = project.model_config(found, output_stride)
    model = DeepLabV3Plus(**config)
    converted, unmatched = project.convert(state)
    _check_layout(path, project, converted, unmatched, model.state_dict())
    model.load_state_dict(converted, strict=True)
    checkpoint = {
        "model": model.state_dict(),
        "model_config": dict(model.config),
        "class_names": names,
        "mean": list(model.mean),
        "std": list(model.std),
        "source": {"project": project.title, "architecture": project.architecture, "file": path.name,
                   "sha256": _sha256(path), "reported": project.reported},
    }
    return ImportedCheckpoint(project=project, checkpoint=checkpoint, class_source=class_source, path=path)


def write_checkpoint(imported: ImportedCheckpoint, out: str | Path, *, overwrite: bool = False) -> Path:
    """Save atomically to ``out``; an existing file is replaced only with ``overwrite``, the imported file never."""
    check_new_files([out], flag="--out", overwrite=overwrite, inputs=[("imported", imported.path)])
    save_checkpoint(imported.checkpoint, out)
    return Path(out)


def _check_arguments(output_stride: int, names: Sequence[str] | None, expected: int | None) -> None:
    """Refuse arguments of the wrong kind before the file is read: a string of class names would be counted by its
    letters, and ``num_classes="21"`` reported as a classifier of 21 classes that is 'not 21'."""
    check_output_stride(output_stride)
    check_class_name_list(names, flag="--classes")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, numbers.Integral)):
        raise UserError(f"--num-classes {expected!r}: expected an integer")


def _class_names(path: Path, found: int, names: Sequence[str] | None, expected: int | None) -> tuple[list[str], str]:
    if expected is not None and expected != found:
        raise UserError(f"{path}: its classifier predicts {found} classes, not --num-classes {expected}")
    if names is not None:
        if len(names) != found:
            raise UserError(f"{path}: its classifier predicts {found} classes but --classes names {len(names)}")
        return list(names), "--classes"
    if found in _DEFAULT_NAMES:
        dataset, default = _DEFAULT_NAMES[found]
        return list(default), f"{dataset} names (pass --classes to rename)"
    return [str(i) for i in range(found)], "numbered (pass --classes to name them)"


def _check_layout(path: Path, project: Project, converted: dict[str, torch.Tensor], unmatched: list[str],
                  ours: dict[str, torch.Tensor]) -> None:
    """Every tensor has its place and its shape, or one line says which does not."""
    what = f"a {project.title} {project.architecture}"
    missing = sorted(set(ours) - set(converted))
    if unmatched or missing:
        extra = f"unexpected tensors {', '.join(unmatched[:3])}" if unmatched else ""
        lack = f"missing tensors for {', '.join(missing[:3])}" if missing else ""
        raise UserError(f"{path}: does not have the layout of {what} ({'; '.join(p for p in (extra, lack) if p)})")
    for key, tensor in converted.items():
        if tensor.shape != ours[key].shape:
            raise UserError(f"{path}: tensor for {key} has shape {list(tensor.shape)}, but {what} has "
                            f"{list(ours[key].shape)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
