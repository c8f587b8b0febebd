"""Checkpoints as plain data: atomic writes, safe reads, models rebuilt from ``model_config`` alone."""
from __future__ import annotations

import codecs
import io
import json
import os
import pickletools
import sys
import tarfile
import tempfile
import traceback
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Sequence

import numpy as np
import torch

from backbones.base import OUTPUT_STRIDES, without_wrapper_prefixes
from datasets import IGNORE_INDEX
from datasets.errors import shorten
from datasets.transforms import check_normalisation
from datasets.voc import CLASS_FILES

from .errors import UserError, error_behind, one_line, os_error_behind
from .tool_args import is_stream

if TYPE_CHECKING:
    from .models import DeepLabV3Plus

__all__ = [
    "MAX_CLASSES", "bare_state_dict_message", "check_class_name_list", "check_output_stride", "class_names_source",
    "is_bare_state_dict", "is_safetensors", "is_state_dict", "load_checkpoint", "match_class_names", "min_input_side",
    "model_from_checkpoint", "model_from_config", "newest_checkpoint", "plain_data", "read_checkpoint_bytes",
    "read_plain_data", "save_checkpoint", "temporary_beside", "too_many_classes", "write_atomically", "write_json",
]

REQUIRED_KEYS = ("model", "model_config")
#: The top-level modules of our DeepLabV3Plus: a bare state dict of it has keys under exactly these.
_OUR_MODULES = {"backbone", "aspp", "decoder"}
# What torch.load(weights_only=True) reads back as it was saved.
_PLAIN_TYPES = (str, bytes, bool, int, float, complex, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)
#: Masks are 8-bit PNGs whose 255 means void, so a model may predict at most 255 classes (ids 0..254).
MAX_CLASSES = IGNORE_INDEX
#: Input normalisation that changes nothing, for checks of a checkpoint that saves only one of its mean and std.
_NEUTRAL = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
# Starts of files that people pass for a checkpoint by mistake; a checkpoint is a zip (or a legacy pickle).
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
               (b"\x1f\x8b", "a gzip archive; unpack it first"))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`write_atomically`): the previous file survives a failure.
    Numpy numbers and paths in it are saved as Python numbers and strings (see :func:`plain_data`)."""
    state = plain_data(state)
    write_atomically(path, lambda file: torch.save(state, file), what="checkpoint")


def plain_data(value: Any, where: str = "checkpoint") -> Any:
    """``value`` with numpy numbers turned into Python ones and paths into strings (``model.config`` of a model
    built with ``num_classes=mask.max() + 1`` holds a numpy integer), so ``torch.load(weights_only=True)`` reads it
    back; any other object is a ValueError naming ``where`` it sits. Containers are copied only where they change."""
    if isinstance(value, np.generic) and isinstance(value.item(), _PLAIN_TYPES):  # np.float64 is a float too
        return value.item()
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        items = {key: plain_data(item, f"{where}[{key!r}]") for key, item in value.items()}
        return value if all(items[key] is item for key, item in value.items()) else items
    if isinstance(value, (list, tuple, set)):
        items = [plain_data(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return value if all(new is old for new, old in zip(items, value)) else type(value)(items)
    hint = "; torch.from_numpy(...) makes it a tensor" if isinstance(value, np.ndarray) else ""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise ValueError(f"{where}: {kind} is not plain data (numbers, strings, lists, dicts, tensors): "
                     f"torch.load(weights_only=True) could not read it back{hint}")


def _write_through(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write`` into the device, pipe or stream ``path``: through this process's stdout or stderr when it is one
    of them, so the bytes follow what was printed there (a redirected file keeps one position), else appended."""
    target = path.stat()
    for stream in (sys.stdout, sys.stderr):
        try:
            same = os.path.samestat(target, os.fstat(stream.fileno()))
        except (AttributeError, OSError, ValueError):  # a stream replaced by one without a file (captured output)
            continue
        if same:
            stream.flush()
            write(stream.buffer)
            stream.buffer.flush()
            return
    with path.open("ab") as handle:
        write(handle)


def write_json(path: str | Path, data: Any, *, what: str = "JSON", indent: int = 2) -> None:
    """Write ``data`` as indented JSON through :func:`write_atomically` (its folder made when missing)."""
    write_atomically(path, lambda handle: handle.write(json.dumps(data, indent=indent).encode("utf-8")), what=what)


def temporary_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a hidden temporary file in ``path``'s folder (``.<name>.<random><suffix>``), to be renamed onto ``path``
    once whole; returns its open descriptor and path. It is readable by others, as a file written in place would be:
    mkstemp's 0600 would hide it from the other users of a shared machine."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, 0o644)
    return fd, Path(name)


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None], *, what: str) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, fsync it, then rename it to ``path``.

    A crash, a full disk or a Ctrl-C at any moment leaves the previous file at ``path`` intact and no partial file;
    a Ctrl-C during the write is raised as the KeyboardInterrupt it is (torch.save's zip writer turns it into a
    RuntimeError). A failed write is a UserError naming ``path`` and ``what`` was written. A symlink is written
    through (its target is replaced, the link stays), and a device, pipe or standard stream is appended to directly,
    after what this process printed.
    """
    if is_stream(path):  # /dev/stdout, even redirected to a file: no file to swap, and none to truncate
        try:
            _write_through(Path(path), write)
        except OSError as exc:
            raise UserError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
        return
    path = Path(path).resolve()  # through a symlink to its target, which is what the user named
    kept = "; the previous one is kept" if path.is_file() else ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a write that was killed midway
            stale.unlink(missing_ok=True)
        fd, tmp_name = temporary_beside(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot write {what} ({exc.strerror or exc}){kept}") from None
    try:
        with os.fdopen(fd, "wb") as tmp:
            try:
                write(tmp)
            except BaseException as exc:
                # A Ctrl-C inside torch.save leaves its zip writer alive in the traceback's frames; freed later, at
                # exit, it would finish the archive into the closed file and abort the process. Freed here, it
                # finishes into this temporary file, which is removed below.
                traceback.clear_frames(exc.__traceback__)
                raise
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if error_behind(exc, KeyboardInterrupt) is not None:
            raise KeyboardInterrupt from None
        failed = os_error_behind(exc)  # torch.save reports a failed write as a RuntimeError
        if failed is not None:
            raise UserError(f"{path}: cannot write {what} ({failed.strerror or one_line(failed)}){kept}") from None
        raise
    _fsync_dir(path.parent)


def read_checkpoint_bytes(path: str | Path) -> bytes:
    """The bytes of checkpoint file ``path``, read once: loading and hashing these bytes (not the file again) keeps
    both on one version of a file that training replaces meanwhile. A missing or unreadable file is a UserError."""
    path = Path(path)
    if path.is_dir():  # a run folder given for the checkpoint in it
        inside = sorted(found.name for found in path.iterdir() if found.suffix in (".pt", ".pth"))
        hint = f"pass one of the checkpoints in it ({', '.join(inside)})" if inside else "it holds no .pt checkpoint"
        raise UserError(f"{path}: is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None


def read_plain_data(path: str | Path, *, allowed_globals: Sequence[Any] = (), data: bytes | None = None) -> Any:
    """``torch.load(path, weights_only=True)``: never runs code; ``allowed_globals`` extends the plain types
    (see ``torch.serialization.safe_globals``); ``data`` is the file's bytes when the caller read them already
    (:func:`read_checkpoint_bytes`). Any failure is a one-line :class:`UserError` naming ``path``."""
    path = Path(path)
    if data is None:
        data = read_checkpoint_bytes(path)
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # refusals of pickled code, truncation and garbage all end here
        reason = one_line(exc, 10_000)
        holds_objects = "Unsupported global" in reason or "GLOBAL" in reason
        kind = None if holds_objects else _not_a_checkpoint(path, data)
        if kind is not None:
            raise UserError(f"{path}: not a PyTorch checkpoint ({kind})") from None
        if holds_objects or "weights_only" in reason:
            reason = "it holds Python objects, not plain data, and loading it could run code; refused"
        elif "zip archive" in reason:  # torch's first sentence says it; the rest is advice about torch.save
            reason = f"truncated or damaged: {reason.split('. ')[0]}"
        raise UserError(f"{path}: not a readable checkpoint ({shorten(reason, 200)})") from None


def _not_a_checkpoint(path: Path, data: bytes) -> str | None:
    """What file ``path`` (holding ``data``) is, in words, when it is plainly no PyTorch checkpoint (neither a zip
    nor a pickle); None when it may be one (a damaged file, a pickle of Python objects)."""
    head = data[:4096]
    archive = _archive(data)
    if archive is not None:
        return archive
    if is_safetensors(data):
        return ("safetensors weights alone, without the model_config that rebuilds the model; "
                "tools/import_checkpoint.py converts a VainF or bubbliiiing file")
    if head.startswith(b"PK") or _reads_as_pickle(head, len(data)):  # torch.save's zip, or its old format
        return None
    if path.suffix.lower() == ".onnx" or (head.startswith(b"\x08") and _is_onnx(data)):
        return "an ONNX model; pass the .pt file it was exported from"
    if not head:
        return "an empty file"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at 4096 bytes is no error
    except UnicodeDecodeError:
        return "not a zip or pickle file"
    if "\x00" in text:
        return "not a zip or pickle file"
    return "a JSON file" if text.lstrip().startswith(("{", "[")) else "a text file"


def is_safetensors(data: bytes) -> bool:
    """Whether ``data`` has safetensors' layout: the length of a JSON header as 8 little-endian bytes, then it."""
    return data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= len(data) - 8


def _archive(data: bytes) -> str | None:
    """``data`` in words when it is a zip or tar archive that torch.save did not write (a checkpoint zipped to be
    sent); None otherwise, also for torch's own archives (a ``data.pkl`` or ``pickle`` inside), damaged or not."""
    try:
        if data.startswith(b"PK"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                kind, names = "zip", archive.namelist()
        elif data[257:262] == b"ustar":
            with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                kind, names = "tar", archive.getnames()
        else:
            return None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError):  # torch's zip cut short: its own reason says more
        return None
    if not names or any(PurePosixPath(name).name in ("data.pkl", "pickle") for name in names):
        return None
    shown = names[0] if len(names) == 1 else f"{len(names)} files"
    holds_checkpoint = any(PurePosixPath(name).suffix.lower() in (".pt", ".pth", ".ckpt") for name in names)
    return f"a {kind} archive of {shown}{'; unpack it first' if holds_checkpoint else ''}"


def _reads_as_pickle(head: bytes, size: int) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` reads as pickle opcodes (parsed, never run) to its STOP
    or as far as ``head`` goes: pickles of protocols 0 and 1 start with no signature, and protocol 0 is text."""
    reader = io.BytesIO(head)
    try:
        return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(reader))
    except ValueError:  # an unknown opcode, or the end of ``head``
        return size > len(head) and reader.tell() == len(head)


def _is_onnx(data: bytes) -> bool:
    """Whether ``data`` parses as an ONNX model with a graph (ONNX files have no signature; their first byte, the
    tag of ``ir_version``, is the caller's cheap test)."""
    import onnx  # deferred: only a file that failed to load as a checkpoint gets here
    from google.protobuf.message import DecodeError

    try:
        return len(onnx.load_model_from_string(data).graph.node) > 0
    except (DecodeError, ValueError):
        return False


def load_checkpoint(path: str | Path, *, data: bytes | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (never runs code) and check it holds a model and its config;
    ``data``: the file's bytes, read already by :func:`read_checkpoint_bytes`."""
    ckpt = read_plain_data(path, data=data)
    if is_bare_state_dict(ckpt):  # torch.save(model.state_dict()), PyTorch's habit
        raise UserError(bare_state_dict_message(path, "so the model cannot be rebuilt"))
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED_KEYS):
        raise UserError(f"{path}: not a checkpoint of this project (needs the keys {', '.join(REQUIRED_KEYS)}; "
                        "convert a VainF or bubbliiiing DeepLabV3+ file with tools/import_checkpoint.py)")
    problem = _content_problem(ckpt)
    if problem:
        raise UserError(f"{path}: not a checkpoint of this project ({problem})")
    num_classes = ckpt["model_config"].get("num_classes")
    too_many = too_many_classes(num_classes) if isinstance(num_classes, int) else None
    if too_many:
        raise UserError(f"{path}: its model {too_many}")
    return ckpt


def is_state_dict(obj: Any) -> bool:
    """A non-empty dict of tensors only, as ``model.state_dict()`` gives."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(value, torch.Tensor) for value in obj.values())


def is_bare_state_dict(state: Any) -> bool:
    """Whether ``state`` is this project's DeepLabV3+ weights alone (``model.state_dict()``, of a wrapped model too),
    keyed under exactly the model's top-level modules."""
    return is_state_dict(state) and {key.split(".", 1)[0] for key in without_wrapper_prefixes(state)} == _OUR_MODULES


def bare_state_dict_message(path: str | Path, consequence: str) -> str:
    """The one line for a file of :func:`is_bare_state_dict` weights: what it lacks and how to save a checkpoint."""
    return (f"{path}: the weights of this project's own DeepLabV3+ without the model_config that rebuilds it, "
            f"{consequence}; load them into the model they came from and save it with deeplab.save_checkpoint("
            "{'model': model.state_dict(), 'model_config': model.config}, PATH), or use the best.pt or last.pt "
            "train.py writes")


def min_input_side(config: dict[str, Any]) -> int:
    """The fewest pixels a side of an input to the network of ``model_config`` ``config`` may have: 3 behind VainF's
    unpadded 3x3 stem (``pad_block_input``), else 1 (every other network pads its convs). Read from the config
    alone, so a cached engine needs no model (nor torchvision) to know it."""
    return 3 if config.get("pad_block_input") else 1


def too_many_classes(num_classes: int) -> str | None:
    """Why the masks of a model predicting ``num_classes`` classes cannot be written, or None when they can."""
    if num_classes <= MAX_CLASSES:
        return None
    return (f"predicts {num_classes} classes, but masks hold at most {MAX_CLASSES} "
            f"(8-bit class ids, {IGNORE_INDEX} = void)")


def _content_problem(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the plain data a checkpoint holds, in words, or None when every part has its type."""
    weights = ckpt["model"]
    if not isinstance(weights, dict):
        return f"'model' is {_kind(weights)}, not a dict of named tensors"
    odd = next((name for name, value in weights.items() if not isinstance(value, torch.Tensor)), None)
    if odd is not None:
        return f"'model' holds {_kind(weights[odd])} under {odd!r}, not a tensor"
    if not isinstance(ckpt["model_config"], dict):
        return f"'model_config' is {_kind(ckpt['model_config'])}, not a dict of settings"
    if not isinstance(ckpt.get("args", {}), dict):
        return f"'args' is {_kind(ckpt['args'])}, not a dict of training settings"
    names = ckpt.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
        return f"'class_names' is {_kind(names)}, not a list of names"
    num_classes = ckpt["model_config"].get("num_classes")
    if names and isinstance(num_classes, int) and len(names) != num_classes:
        return f"'class_names' has {len(names)} names, but its 'model_config' predicts {num_classes} classes"
    try:  # one not saved stands in as neutral: the model's config gives it
        check_normalisation(*(ckpt[key] if ckpt.get(key) is not None else neutral for key, neutral in _NEUTRAL.items()))
    except ValueError as exc:
        return str(exc)
    return None


def _kind(value: Any) -> str:
    """A short description of a value for a message: its type, and its text when short."""
    text = repr(value)
    plain = isinstance(value, (str, int, float, list, tuple)) and len(text) <= 40
    return f"{type(value).__name__} {text}" if plain else f"a {type(value).__name__}"


def model_from_checkpoint(
    ckpt: dict[str, Any], path: str | Path = "checkpoint", *, output_stride: int | None = None
) -> DeepLabV3Plus:
    """Rebuild the model from ``ckpt["model_config"]`` and load ``ckpt["model"]`` strictly; ``output_stride``
    rebuilds it at another stride (the same weights, ASPP rates scaled: 6/12/18 at 16 are 12/24/36 at 8)."""
    model = model_from_config(ckpt["model_config"], path, output_stride=output_stride)
    try:  # the weights of a compiled or DDP-wrapped model (model.state_dict() of its wrapper) load too
        model.load_state_dict(without_wrapper_prefixes(ckpt["model"]), strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match its model_config ({one_line(exc)})") from None
    return model


def check_class_name_list(names: Any, *, flag: str) -> None:
    """Refuse a string or path given for a list of class names: it would be counted, and named, by its letters."""
    if isinstance(names, (str, os.PathLike)):
        raise UserError(f"{flag} {names}: takes a list of class names, not a string; read a classes.txt with "
                        "datasets.read_class_names")


def check_output_stride(value: Any) -> None:
    """Refuse an output stride no backbone is built at, naming the flag (a checkpoint's own is checked by the
    model)."""
    if value not in OUTPUT_STRIDES:
        raise UserError(f"--output-stride {value!r}: choose one of {', '.join(map(str, OUTPUT_STRIDES))}")


def model_from_config(
    config: dict[str, Any], path: str | Path = "checkpoint", *, output_stride: int | None = None, **overrides: Any
) -> DeepLabV3Plus:
    """The freshly initialised model a checkpoint's ``model_config`` describes, at ``output_stride`` if given and
    with ``overrides`` (e.g. ``num_classes``); a config the model cannot take is a UserError naming ``path``."""
    from .models import DeepLabV3Plus, config_at_output_stride  # deferred: a cached engine needs no PyTorch model

    if output_stride is not None:  # the caller's mistake, not the file's
        check_output_stride(output_stride)
    try:
        if output_stride is not None and output_stride != config.get("output_stride"):
            config = config_at_output_stride(config, output_stride)
        return DeepLabV3Plus(**{**config, **overrides})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: invalid model_config ({exc})") from None


def match_class_names(
    path: str | Path, ckpt: dict[str, Any], data_names: Sequence[str], *, data_root: str | Path,
    allow_mismatch: bool = False,
) -> list[str]:
    """The class names to score or train under when checkpoint ``ckpt`` meets data whose classes are ``data_names``.

    A model predicts the classes it was trained on; scored or trained further under other classes, its numbers
    mean nothing. The class count and, where the checkpoint records them, the names must agree; otherwise a
    UserError names both sides, unless ``allow_mismatch`` (the user says the ids mean the same classes): then
    the data's names, followed by the checkpoint's beyond them, cover the ids of both.
    """
    recorded = list(ckpt.get("class_names") or []) or None
    num_classes = ckpt["model_config"].get("num_classes")
    num_classes = num_classes if isinstance(num_classes, int) else len(recorded or data_names)
    model_names = recorded or [str(i) for i in range(num_classes)]
    same_count, same_names = num_classes == len(data_names), recorded is None or recorded == list(data_names)
    if allow_mismatch or (same_count and same_names):
        return list(data_names) + _names_beyond(data_names, model_names)
    source = class_names_source(data_root)
    advice = "pass --ignore-class-names if the ids mean the same classes"
    if not same_count:
        raise UserError(f"{path}: the checkpoint predicts {num_classes} classes ({_preview(model_names)}) but "
                        f"{source} has {len(data_names)} ({_preview(data_names)}); {advice}")
    differ = [i for i, (a, b) in enumerate(zip(model_names, data_names)) if a != b]
    raise UserError(f"{path}: class {differ[0]} is {model_names[differ[0]]!r} in the checkpoint but "
                    f"{data_names[differ[0]]!r} in {source} ({len(differ)} of {num_classes} names differ); {advice}")


def class_names_source(data_root: str | Path) -> str:
    """Where a data root's class names come from, for messages: its ``classes.txt``, else its ``labelmap.txt``,
    else VOC's (neither there)."""
    for name in CLASS_FILES:
        if (Path(data_root) / name).is_file():
            return str(Path(data_root) / name)
    return f"{data_root} (VOC's classes, no classes.txt)"


def _names_beyond(data_names: Sequence[str], model_names: Sequence[str]) -> list[str]:
    """The checkpoint's names of the ids beyond the data's, a name the data gives another id marked with its own
    (``car (id 7)``): scores are keyed by name, so a repeated one would hide a class."""
    return [f"{name} (id {i})" if name in data_names else name
            for i, name in enumerate(model_names[len(data_names):], start=len(data_names))]


def _preview(names: Sequence[str], shown: int = 4) -> str:
    """The first few class names, for a message."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


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
