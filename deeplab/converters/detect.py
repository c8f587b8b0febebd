"""Which project wrote a checkpoint, told from its tensor names; one clear line for anything we cannot import."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import bubbliiiing, vainf
from .base import Project, StateDict

__all__ = ["PROJECTS", "detect_project"]

PROJECTS: dict[str, Project] = {project.name: project for project in (vainf.PROJECT, bubbliiiing.PROJECT)}


def _expected() -> str:
    return " or ".join(f"a {p.title} {p.architecture}" for p in PROJECTS.values())


def detect_project(state: StateDict, path: str | Path, *, forced: str | None = None) -> Project:
    """The project whose layout ``state`` has (or ``forced``, checked); refuses other architectures by name."""
    if forced is not None and forced not in PROJECTS:
        raise UserError(f"--from {forced}: choose one of {', '.join(PROJECTS)}")
    candidates = [PROJECTS[forced]] if forced else list(PROJECTS.values())
    owners = [project for project in candidates if project.owns(state)]
    if not owners:
        expected = f"a {candidates[0].title} {candidates[0].architecture}" if forced else _expected()
        sample = ", ".join(list(state)[:3])
        raise UserError(f"{path}: not {expected} (its tensors are named like {sample})")
    project = owners[0]
    variant = project.unsupported(state)
    if variant is not None:
        raise UserError(f"{path}: {variant} from {project.title}; only its {project.architecture} can be imported")
    return project
