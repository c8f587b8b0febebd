"""Checkpoints as plain data: atomic writes, safe reads, models rebuilt from ``model_config`` alone."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .errors import UserError

if TYPE_CHECKING:
    from .models import DeepLabV3Plus

__all__ = [
    "check_writable", "load_checkpoint", "model_from_checkpoint", "newest_checkpoint", "read_plain_data",
    "save_checkpoint",
]

REQUIRED_KEYS = ("model", "model_config")


def check_writable(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove a file can be written there, so a bad --out fails before any work."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write to the output folder ({exc.strerror or exc})") from None
    return out_dir


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    A crash or a full disk at any moment leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a save that was killed midway
            stale.unlink(missing_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide checkpoints from other users of a shared machine
    except OSError as exc:
        raise UserError(f"{path}: cannot write checkpoint ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as tmp:
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"{path}: cannot write checkpoint ({exc.strerror or exc}); the previous one is kept") from None
        raise
    _fsync_dir(path.parent)


def read_plain_data(path: str | Path, *, allowed_globals: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)``: never runs code; ``allowed_globals`` extends the plain types
    (see ``torch.serialization.safe_globals``). Any failure is a one-line :class:`UserError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refusals of pickled code, truncation and garbage all end here
        reason = " ".join(str(exc).split())
        if "weights_only" in reason or "Unsupported global" in reason or "GLOBAL" in reason:
            reason = "it holds Python objects, not plain data, and loading it could run code; refused"
        elif not reason:
            reason = type(exc).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason[:300]})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (never runs code) and check it holds a model and its config."""
    ckpt = read_plain_data(path)
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED_KEYS):
        raise UserError(f"{path}: not a checkpoint of this project (needs the keys {', '.join(REQUIRED_KEYS)}; "
                        "convert a VainF or bubbliiiing DeepLabV3+ file with tools/import_checkpoint.py)")
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any], path: str | Path = "checkpoint", *, output_stride: int | None = None
) -> DeepLabV3Plus:
    """Rebuild the model from ``ckpt["model_config"]`` and load ``ckpt["model"]`` strictly; ``output_stride``
    rebuilds it at another stride (the same weights, ASPP rates scaled: 6/12/18 at 16 are 12/24/36 at 8)."""
    from .models import DeepLabV3Plus, config_at_output_stride  # deferred: a cached engine needs no PyTorch model

    config = ckpt["model_config"]
    try:
        if output_stride is not None and output_stride != config.get("output_stride"):
            config = config_at_output_stride(config, output_stride)
        model = DeepLabV3Plus(**config)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: invalid model_config ({exc})") from None
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match its model_config ({' '.join(str(exc).split())[:300]})") from None
    return model


def newest_checkpoint(runs: str | Path = "runs") -> Path:
    """The most recently written ``best.pt`` under ``runs``, or a user error saying how to get one."""
    runs = Path(runs)
    found = sorted(runs.rglob("best.pt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise UserError(f"{runs.resolve()}: no best.pt found; train a model with tools/train.py or pass --checkpoint CKPT")
    return found[-1]


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
