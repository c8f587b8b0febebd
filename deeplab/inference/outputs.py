"""Prediction files: a palette PNG of class ids and a colour overlay with its legend per input image, under names
that never collide, never replacing a file that this run did not write.

- Names: ``<stem>_mask.png`` and ``<stem>_overlay.png`` per image, ``<stem>_overlay.mp4`` (and ``<stem>_masks/``)
  per video. Inputs whose stems clash (``a.jpg`` and ``a.png``) keep their extension (``a.jpg_mask.png``); same
  file names in different folders take the folder's name in front (``day1_a.jpg_mask.png``); anything still
  equal (ignoring case) gets ``-2``, ``-3``... (a number no other input's name has).
- Ownership: files that exist before the run are replaced only when asked (``overwrite``); without it, a name
  that exists stops the run before any work, and files are created exclusively, so one that appears meanwhile
  is not replaced either. An input is never replaced.
- Every file carries a PNG text marker (:data:`PREDICTION_KEY`), so a later run into the same folder never takes
  a prediction for an input photo.
"""
from __future__ import annotations

import itertools
import os
from collections import defaultdict
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np
from PIL import Image, PngImagePlugin

from datasets.image_files import label_image, open_image

from ..checkpoint import temporary_beside
from ..errors import UserError
from .overlay import overlay

__all__ = ["MASK_SUFFIX", "OVERLAY_SUFFIX", "PREDICTION_KEY", "VIDEO_MASKS_SUFFIX", "VIDEO_OVERLAY_SUFFIX",
           "VIDEO_SUFFIXES", "PredictionWriter", "claim_new_file", "free_output_folder", "is_prediction_file",
           "output_names", "prediction_file_names", "save_frame_mask", "split_earlier_predictions"]

MASK_SUFFIX, OVERLAY_SUFFIX = "_mask.png", "_overlay.png"
VIDEO_OVERLAY_SUFFIX, VIDEO_MASKS_SUFFIX = "_overlay.mp4", "_masks"
#: File endings read as videos (compared in lower case).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
#: PNG text key marking a file this tool wrote; its value says which kind ("mask" or "overlay").
PREDICTION_KEY = "deeplab-prediction"


def output_names(inputs: Sequence[Path]) -> dict[Path, str]:
    """A distinct base name per input file, the stem where it is unique, else longer; a file named twice
    (``a.jpg`` and ``/abs/a.jpg``, symbolic links aside) keeps its first spelling only."""
    spellings = {os.path.abspath(p): Path(p) for p in reversed(inputs)}  # the first spelling wins
    paths = list(dict.fromkeys(spellings[os.path.abspath(p)] for p in inputs))
    levels = dict.fromkeys(paths, 0)  # 0: stem, 1: file name, 2: parent folder + file name
    while True:
        names = {p: _name_at(p, level) for p, level in levels.items()}
        clashes = [group for group in _clashes(names) if any(levels[p] < 2 for p in group)]
        if not clashes:
            break
        for group in clashes:
            for path in group:
                levels[path] = min(levels[path] + 1, 2)
    taken = {name.casefold() for name in names.values()}
    for group in _clashes(names):  # the same folder and file name on two paths (or equal but for case)
        numbers = itertools.count(2)
        for path in group[1:]:
            # The next number whose name no other input has (another input's stem may end in "-2" already).
            names[path] = next(name for name in (f"{names[path]}-{n}" for n in numbers) if name.casefold() not in taken)
            taken.add(names[path].casefold())
    return names


def _name_at(path: Path, level: int) -> str:
    if level == 0:
        return path.stem
    if level == 1 or not path.resolve().parent.name:
        return path.name
    return f"{path.resolve().parent.name}_{path.name}"


def _clashes(names: dict[Path, str]) -> list[list[Path]]:
    """Groups of paths whose names are equal, ignoring case (as on macOS and Windows disks)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path, name in names.items():
        groups[name.casefold()].append(path)
    return [group for group in groups.values() if len(group) > 1]


def prediction_file_names(image_path: Path) -> list[str]:
    """File names a saved prediction of ``image_path`` may have: the VOC devkit's ``<id>.png`` and ours."""
    return [f"{image_path.stem}.png", f"{image_path.stem}{MASK_SUFFIX}", f"{image_path.name}{MASK_SUFFIX}"]


def save_frame_mask(path: Path, mask: np.ndarray, *, exclusive: bool = False) -> None:
    """A video frame's palette mask, marked like every prediction file, so a later run knows it wrote it;
    ``exclusive``: created only where no file is (UserError otherwise)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PREDICTION_KEY, "frame mask")
    with _open_new(path) if exclusive else open(path, "wb") as handle:
        label_image(mask).save(handle, format="PNG", pnginfo=info)


def claim_new_file(path: Path) -> None:
    """Create ``path`` empty for a writer that opens files by name (OpenCV's), UserError where a file is already:
    one that appeared since :meth:`PredictionWriter.check` is not replaced."""
    try:
        _open_new(path).close()
    except OSError as exc:
        raise UserError(f"{path}: cannot write results ({exc.strerror or exc})") from None


def _open_new(path: Path) -> BinaryIO:
    """``path`` opened for writing only where no file is; a UserError naming it where one appeared since the check."""
    try:
        return open(path, "xb")
    except FileExistsError:
        raise UserError(f"{path}: appeared while predicting and was not replaced; pass --overwrite to replace such "
                        "files, or another --out") from None


def is_prediction_file(path: Path) -> bool:
    """Whether ``path`` is a mask or overlay this tool wrote (its PNG text marker; the header alone is read)."""
    if path.suffix.lower() != ".png":
        return False
    try:
        with open_image(path) as image:
            return PREDICTION_KEY in image.info
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # a huge photo is no mask of ours
        return False


def free_output_folder(base: str | Path, images: Sequence[Path], *, videos: Sequence[Path] = (),
                       save_masks: bool = False) -> Path:
    """``base``, or ``base-2``, ``base-3``... : the first folder where none of the inputs' files exist yet."""
    base = Path(base)
    for number in itertools.count(1):
        folder = base if number == 1 else base.with_name(f"{base.name}-{number}")
        if not PredictionWriter(folder, images, videos=videos, save_masks=save_masks).existing():
            return folder
    raise AssertionError("unreachable")


class PredictionWriter:
    """Writes each image's mask and overlay into ``folder`` under :func:`output_names` (and names each video's
    outputs), replacing nothing that this run did not write unless ``overwrite``; :meth:`check` looks at
    everything it will write before the first file."""

    def __init__(self, folder: str | Path, images: Sequence[Path], *, videos: Sequence[Path] = (),
                 save_masks: bool = False, overwrite: bool = False) -> None:
        self.folder, self.save_masks, self.overwrite = Path(folder), save_masks, overwrite
        self.names = output_names([*images, *videos])
        video_set = {Path(v) for v in videos}
        self.videos = [path for path in self.names if path in video_set]
        self.images = [path for path in self.names if path not in video_set]

    def paths(self, image_path: Path) -> tuple[Path, Path]:
        """Where the mask and the overlay of ``image_path`` go."""
        name = self.names[Path(image_path)]
        return self.folder / f"{name}{MASK_SUFFIX}", self.folder / f"{name}{OVERLAY_SUFFIX}"

    def video_paths(self, video_path: Path) -> tuple[Path, Path | None]:
        """Where the overlay video of ``video_path`` goes, and its folder of frame masks (None without masks)."""
        name = self.names[Path(video_path)]
        masks = self.folder / f"{name}{VIDEO_MASKS_SUFFIX}" if self.save_masks else None
        return self.folder / f"{name}{VIDEO_OVERLAY_SUFFIX}", masks

    def outputs_of(self, source: Path) -> list[Path]:
        """The files (and frame-mask folder) this run writes for the input ``source``."""
        if source in self.videos:
            return [p for p in self.video_paths(source) if p is not None]
        return list(self.paths(source))

    def planned(self) -> list[Path]:
        """Every file (and frame-mask folder) this run will write."""
        return [path for source in self.names for path in self.outputs_of(source)]

    def existing(self) -> list[Path]:
        """The files this run would write that exist already (a frame-mask folder counts when not empty)."""
        return [p for p in self.planned() if p.exists() and not (p.is_dir() and not any(p.iterdir()))]

    def check(self) -> None:
        """UserError, before any work, when a file to write is an input, or exists and ``overwrite`` is off."""
        resolved = [p.resolve() for p in self.names]
        inputs, first_input_in = set(resolved), {}
        for name, full in zip(self.names, resolved):
            first_input_in.setdefault(full.parent, name)
        for source in self.names:
            for path in self.outputs_of(source):
                full = path.resolve()
                if full in inputs:
                    raise UserError(f"{path}: is an input, and the prediction of {source} would replace it; "
                                    "pass another --out")
                if full in first_input_in and path.is_dir():
                    raise UserError(f"{first_input_in[full]}: is an input inside {path}, where the frame masks of "
                                    f"{source} go; pass another --out")
                _check_kind(path, source)
        existing = self.existing()
        if existing and not self.overwrite:
            more = f" ({len(existing) - 1} more files alike)" if len(existing) > 1 else ""
            raise UserError(f"{existing[0]}: exists and this run did not write it{more}; pass --overwrite to "
                            "replace such files, or another --out")

    def save(self, image_path: Path, image: np.ndarray, mask: np.ndarray, *, class_names: Sequence[str],
             alpha: float) -> tuple[Path, Path]:
        """Write the mask and the overlay of ``image_path``; returns both paths."""
        mask_path, overlay_path = self.paths(image_path)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(mask_path, label_image(mask), kind="mask")
        self._write(overlay_path, Image.fromarray(overlay(image, mask, alpha=alpha, class_names=class_names)),
                    kind="overlay")
        return mask_path, overlay_path

    def _write(self, path: Path, picture: Image.Image, *, kind: str) -> None:
        """A complete marked PNG at ``path``: created exclusively, or (``overwrite``) swapped in by a rename."""
        info = PngImagePlugin.PngInfo()
        info.add_text(PREDICTION_KEY, kind)
        try:
            if self.overwrite:
                fd, written = temporary_beside(path)
                handle = os.fdopen(fd, "wb")
            else:
                handle, written = _open_new(path), path
        except OSError as exc:
            raise UserError(f"{path}: cannot write results ({exc.strerror or exc})") from None
        try:
            with handle:
                picture.save(handle, format="PNG", pnginfo=info)
            if written != path:
                os.replace(written, path)
        except BaseException as exc:
            written.unlink(missing_ok=True)  # our own partial file
            if isinstance(exc, OSError):
                raise UserError(f"{path}: cannot write results ({exc.strerror or exc})") from None
            raise


def _check_kind(path: Path, source: Path) -> None:
    """UserError when a folder stands where a file of ``source`` goes, or a file where its frame-mask folder goes:
    ``overwrite`` replaces files with files only, so the run would fail halfway."""
    wants_folder = path.name.endswith(VIDEO_MASKS_SUFFIX)
    if path.exists() and path.is_dir() != wants_folder:
        found, wanted = ("a file", "the frame-mask folder") if wants_folder else ("a folder", "a file")
        raise UserError(f"{path}: is {found}, where {wanted} of {source} goes (--overwrite does not replace it); "
                        "move it away, or pass another --out")


def split_earlier_predictions(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """``paths`` parted into photos and files this tool wrote before (never taken as inputs)."""
    photos, earlier = [], []
    for path in paths:
        (earlier if is_prediction_file(path) or _is_earlier_overlay_video(path) else photos).append(path)
    return photos, earlier


def _is_earlier_overlay_video(path: Path) -> bool:
    """Whether ``path`` is ``<stem>_overlay.mp4`` (or ``<name>_overlay.mp4``, where a photo shared the stem) beside
    a video ``<stem>.*``: the overlay an earlier run wrote for that video (videos carry no marker; a user's own
    ``*_overlay.mp4`` without such a neighbour is an input)."""
    if not path.name.lower().endswith(VIDEO_OVERLAY_SUFFIX):
        return False
    base = path.name[: -len(VIDEO_OVERLAY_SUFFIX)]
    return any(other != path and base in (other.stem, other.name) and other.suffix.lower() in VIDEO_SUFFIXES
               for other in path.parent.iterdir())
