"""Prepared engines on disk, so a prediction with a known checkpoint skips the export, conversion and calibration.

An entry is a folder of artefacts (ONNX or OpenVINO IR files) plus ``manifest.json`` holding the entry's full key
and each file's size and SHA-256. The key names everything the artefacts depend on: the checkpoint's content hash,
the engine and its precision, the input-shape policy, the calibration images' digest (int8), how the model differs
from the checkpoint's config (another output stride), the versions of the libraries that wrote them and a digest of
this toolkit's model and export code. The folder name carries a digest of the key, so a changed checkpoint, library
version or model code looks in another folder (a miss); an entry whose manifest or files do not match is corrupt and
rebuilt, never trusted. Entries are built in a temporary folder beside their final place and renamed into it, so a
crash never leaves a half-written entry under the final name. Storing an entry removes the ones it outdates: built
from an earlier version of the same checkpoint file (the manifest names the file), or by other library versions or
cache format, for the same engine, shape policy, calibration and variant, and the entry calibrated on the images an
earlier run predicted; entries of other variants, calibrations or checkpoint files stay. Small JSON records (the
verified choice of ``auto``) live beside the entries, written atomically; one that cannot be parsed is redone.

Entries live beside the checkpoint (``best.pt`` -> ``best.engines/``), or in the user cache folder
(``$XDG_CACHE_HOME/deeplab/engines/<checkpoint hash>/``, default ``~/.cache``) when the checkpoint's folder
cannot be written, is on a full disk (or holds a damaged entry that cannot be removed); with neither usable the
engine is built in a temporary folder and not kept.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, Mapping

from ..checkpoint import _fsync_dir, write_json
from ..tool_args import check_writable
from ..errors import UserError

__all__ = ["CACHE_FORMAT", "PER_RUN_CALIBRATION", "CacheKey", "EngineCache", "code_digest", "file_sha256",
           "library_versions", "user_cache_dir"]

#: Bumped whenever the code that writes artefacts changes what it writes: older entries then miss.
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
_TMP_MAX_AGE_S = 3600  # a temporary folder older than this belongs to a run that died
#: What reading a damaged or foreign manifest may raise.
_BAD_MANIFEST = (OSError, ValueError, KeyError, TypeError, AttributeError)
#: The toolkit's code an engine's artefacts depend on: the model, how a checkpoint rebuilds it and how it is exported.
_CODE = ("backbones", "deeplab/models", "deeplab/inference", "deeplab/checkpoint.py")
#: Starts a key's calibration digest when the images were the ones a run predicts: an entry calibrated on them
#: outdates the earlier such entry, which a later run, predicting other images, would never ask for again.
PER_RUN_CALIBRATION = "inputs:"
#: How writing to a full disk (or a user over quota) fails.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` (distribution names) read from their metadata, without importing them."""
    found = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    return found


@functools.cache
def code_digest() -> str:
    """SHA-256 (16 hex digits) of this toolkit's source that shapes an engine (:data:`_CODE`): an update that changes
    the model or its export misses the entries written before it, though the package's version number stays."""
    top = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for part in _CODE:
        path = top / part
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []:
            digest.update(f"{file.relative_to(top).as_posix()}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deeplab/engines`` (``~/.cache/deeplab/engines`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deeplab" / "engines"


@dataclass(frozen=True)
class CacheKey:
    """Everything a prepared engine depends on; two equal keys may share one entry."""

    checkpoint_sha256: str
    engine: str
    precision: str
    shape_policy: str
    versions: Mapping[str, str]
    calibration: str | None = None
    variant: str | None = None
    format: int = field(default=CACHE_FORMAT)

    def as_dict(self) -> dict:
        return {**asdict(self), "versions": dict(sorted(self.versions.items()))}

    @property
    def slot(self) -> str:
        """Entries for one engine and shape policy share this folder-name prefix."""
        return f"{self.engine}-{self.shape_policy}-"

    def outdates(self, other: Mapping) -> bool:
        """Whether an entry keyed ``other`` (a manifest's key) is this key's older build: the same engine, shape
        policy, calibration and variant from other checkpoint bytes, library versions or cache format."""
        new = json.loads(json.dumps(self.as_dict()))
        same = ("engine", "precision", "shape_policy", "variant")
        return (other != new and all(other.get(name) == new[name] for name in same)
                and _calibration_slot(other.get("calibration")) == _calibration_slot(new["calibration"]))

    @property
    def entry_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]
        return self.slot + digest


class EngineCache:
    """Where one checkpoint's prepared engines are found and written (see the module docstring)."""

    def __init__(self, checkpoint: str | Path, checkpoint_sha256: str, *, user_dir: Path | None = None) -> None:
        checkpoint = Path(checkpoint)
        self.checkpoint_name = checkpoint.name
        self.roots = [checkpoint.with_name(f"{checkpoint.stem}.engines"),
                      (user_dir or user_cache_dir()) / checkpoint_sha256[:16]]

    def read_record(self, name: str) -> dict | None:
        """The JSON object stored as ``name`` (from the first root that holds it), or ``None``; a corrupt one is
        reported and left to be rewritten."""
        for root in self.roots:
            path = root / name
            if not path.is_file():  # absent, or something else in the way (a folder): written elsewhere
                continue
            try:
                record = json.loads(path.read_text())
                if isinstance(record, dict):
                    return record
            except (OSError, ValueError):
                pass
            print(f"warning: {path}: unreadable record; redoing it", file=sys.stderr)
        return None

    def write_record(self, name: str, record: dict) -> Path | None:
        """Store ``record`` as JSON under ``name`` in the first root where it can be written (atomically); ``None``
        where none can take it."""
        for root in self.roots:
            if _writable(root) and _write_json(root / name, record):
                return root / name
        return None

    def find(self, key: CacheKey) -> Path | None:
        """The valid entry for ``key``, or ``None``; a corrupt one is reported (and left to be rebuilt unless a
        valid copy exists in another root)."""
        damaged = []
        for root in self.roots:
            entry = root / key.entry_name
            if not entry.exists():
                continue
            problem = _entry_problem(entry, key)
            if problem is None:
                for bad, why in damaged:
                    print(f"warning: {bad}: {why}; using {entry}", file=sys.stderr)
                return entry
            damaged.append((entry, problem))
        for bad, why in damaged:
            print(f"warning: {bad}: {why}; rebuilding it", file=sys.stderr)
        return None

    @contextlib.contextmanager
    def build(self, key: CacheKey, write: Callable[[Path, bool], None]) -> Iterator[Path]:
        """Run ``write(folder, kept)`` to make the artefacts, store them under ``key`` and yield the stored entry.

        Where no cache folder can take the entry, the artefacts live in a temporary folder for the ``with`` block
        only (``kept`` is then False).
        """
        for root in self.roots:
            if not (_writable(root) and _room_for(root / key.entry_name, key)):
                continue
            tmp = _built_in(root, key, write, self.checkpoint_name)
            if tmp is None:  # that disk is full: the next root may be on another
                continue
            try:  # once renamed into place, tmp is gone and its removal below a no-op
                entry = root / key.entry_name
                if _place(tmp, entry, key):
                    _fsync_dir(root)
                    self._prune(root, key, entry)
                else:
                    print(f"warning: {entry}: cannot store the engine there; it is not cached", file=sys.stderr)
                    entry = tmp
                yield entry
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        print(f"warning: cannot write a prepared-engine cache in {' or '.join(map(str, self.roots))}; "
              "the engine is rebuilt on every run", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="deeplab-engine-") as tmp:
            write(Path(tmp), False)
            yield Path(tmp)

    def _prune(self, root: Path, key: CacheKey, entry: Path) -> None:
        """Remove the entries of ``root`` that ``key`` outdates for this checkpoint file (see the module docstring)."""
        for other in root.glob(key.slot + "*"):
            if other == entry:
                continue
            with contextlib.suppress(*_BAD_MANIFEST):
                manifest = json.loads((other / MANIFEST).read_text())
                if manifest.get("checkpoint") == self.checkpoint_name and key.outdates(manifest["key"]):
                    _discard(other)


def _built_in(root: Path, key: CacheKey, write: Callable[[Path, bool], None], checkpoint: str) -> Path | None:
    """A temporary folder in ``root`` holding ``write``'s artefacts and their manifest; ``None`` (reported, nothing
    left behind) when the disk filled up meanwhile: a cache is worth no failed prediction."""
    _remove_abandoned(root)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the entry from other users of the checkpoint
        write(tmp, True)
        _write_manifest(tmp, key, checkpoint)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (isinstance(exc, OSError) and exc.errno in _NO_ROOM):
            raise
        print(f"warning: {root}: no room for the prepared engine ({exc.strerror}); not caching it there",
              file=sys.stderr)
        return None
    return tmp


def _calibration_slot(calibration: str | None) -> str | None:
    """The calibrations an entry stands beside: each its own, but one for all per-run images."""
    if isinstance(calibration, str) and calibration.startswith(PER_RUN_CALIBRATION):
        return PER_RUN_CALIBRATION
    return calibration


def _entry_problem(entry: Path, key: CacheKey) -> str | None:
    """Why ``entry`` cannot be used for ``key`` (``None``: it can)."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("key") != json.loads(json.dumps(key.as_dict())):
            return "its manifest describes another engine"
        for name, expected in manifest["files"].items():
            path = entry / name
            if not path.is_file() or path.stat().st_size != expected["size"] or file_sha256(path) != expected["sha256"]:
                return f"{name} is missing or does not match its recorded hash"
    except _BAD_MANIFEST as exc:
        return f"unreadable manifest ({type(exc).__name__})"
    return None


def _write_manifest(folder: Path, key: CacheKey, checkpoint: str) -> None:
    """Record the key, the checkpoint file's name and every file's size and hash, each file flushed to disk before
    the manifest is."""
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"key": key.as_dict(), "checkpoint": checkpoint, "files": files,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(folder / MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _writable(root: Path) -> bool:
    try:
        check_writable(root)
    except UserError:
        return False
    return True


def _discard(folder: Path) -> bool:
    """Move ``folder`` out of the way first (one rename), then delete it, so readers never see it half-deleted;
    whether it is gone (False: it cannot be moved, e.g. another user's entry in a shared folder)."""
    trash = folder.with_name(f"{_TMP_PREFIX}old-{folder.name}-{os.getpid()}")
    try:
        os.rename(folder, trash)
    except OSError:
        return not os.path.lexists(folder)  # True where another run moved it already
    _remove(trash)
    return True


def _remove(path: Path) -> None:
    """Delete ``path``: a folder with what it holds, else the file or link itself (never a link's target)."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _room_for(entry: Path, key: CacheKey) -> bool:
    """Whether ``key``'s entry can be stored at ``entry``: nothing there, a valid entry (a concurrent run's), or a
    damaged one that can be moved away; one that cannot is reported."""
    if not os.path.lexists(entry) or _entry_problem(entry, key) is None or _discard(entry):
        return True
    print(f"warning: {entry}: a damaged entry that cannot be removed; storing the engine elsewhere", file=sys.stderr)
    return False


def _place(tmp: Path, entry: Path, key: CacheKey) -> bool:
    """Rename the built folder ``tmp`` to ``entry``; whether ``entry`` then holds a valid entry for ``key`` (a
    concurrent run's that got there first is kept and ``tmp`` left for the caller to delete)."""
    try:
        os.rename(tmp, entry)
    except OSError:
        return _entry_problem(entry, key) is None
    return True


def _write_json(path: Path, record: dict) -> bool:
    """Write ``record`` to ``path`` atomically; whether it could be (not where, e.g., a folder is in the way)."""
    try:
        write_json(path, record, what="record", indent=1)
    except UserError:
        return False
    return True


def _remove_abandoned(root: Path) -> None:
    """Temporary folders and files left by runs that were killed midway (old enough not to belong to a live run)."""
    now = time.time()
    for tmp in root.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - tmp.lstat().st_mtime > _TMP_MAX_AGE_S:
                _remove(tmp)
