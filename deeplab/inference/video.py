"""Video files through the predictor: frames decoded with OpenCV (FFmpeg) on a background thread, segmented
in batches, and written as an overlay video of the same size and frame rate (plus palette masks per frame). The
MPEG-4 and VP8 encoders take even sides only: an odd side gets one more row or column, a copy of the edge.

Audio is not kept: OpenCV reads and writes the picture only. A file that stops decoding before the frame
count its header announces (truncated or corrupt) still leaves a playable overlay of the frames before it,
and the error names the frame.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import cv2
import numpy as np

from datasets import DataError

from ..checkpoint import temporary_beside
from ..errors import UserError
from ..tool_args import check_new_files
from .outputs import VIDEO_SUFFIXES, claim_new_file, is_prediction_file, save_frame_mask
from .overlay import overlay
from .pipeline import prefetch, segment_stream
from .predictor import Prediction, Predictor

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoError",
    "VideoInfo",
    "VideoResult",
    "ends_early",
    "is_video",
    "open_video",
    "probe_video",
    "read_frames",
    "segment_video",
    "split_videos",
]



@dataclass(frozen=True)
class _Codec:
    """An output codec and the frames it takes: even sides or any, the shortest side and the fewest pixels."""

    fourcc: str
    even: bool
    min_side: int
    min_pixels: int


#: Output codecs by file ending: MPEG-4 Part 2 in .mp4 (fast; desktop players), VP8 in .webm (browsers play it).
#: This OpenCV build has no H.264 encoder. Limits measured with it: a 1-pixel side does not open MPEG-4 or VP8
#: (padding it would double the picture, so it is refused), and VP8 writes a file without frames below 28 pixels
#: (4x6 and 2x12 are empty, 2x14 and 4x8 play).
_CODECS = {".mp4": _Codec("mp4v", even=True, min_side=2, min_pixels=4),
           ".webm": _Codec("VP80", even=True, min_side=2, min_pixels=28),
           ".avi": _Codec("MJPG", even=False, min_side=1, min_pixels=1)}
#: Frame rate written when a file declares none.
FALLBACK_FPS = 25.0
#: Containers without a frame count in their index: OpenCV estimates it from duration x frame rate, which can
#: overshoot by a frame or so on a healthy file (AVI, MP4 and MOV count exactly).
_ESTIMATED_COUNT = (".mkv", ".webm")
#: File names of frame masks: the frame number, zero-padded to six digits or more.
_FRAME_MASK = re.compile(r"\d{6,}\.png")


class VideoError(UserError):
    """A video that cannot be read (whole or in part): one line naming the file and, where known, the frame;
    ``frames_written`` overlay frames were written before it (0 when none)."""

    def __init__(self, message: str, frames_written: int = 0) -> None:
        super().__init__(message)
        self.frames_written = frames_written


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header declares: frame count (0 when unknown), frames per second, width and height."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class VideoResult:
    """A segmented video: the overlay file, the masks folder (or None), frames written, and the input's header."""

    overlay_path: Path
    masks_dir: Path | None
    frames: int
    info: VideoInfo


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video by its ending (one of :data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open ``path`` for reading and read its header; raise :class:`VideoError` if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    # FFmpeg prints its own decoder complaints on stderr; our error line says what matters.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    name = _opencv_name(path)
    with _opencv_log_off():
        capture = cv2.VideoCapture(name, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot open as a video (not a video file, cut off before its index, "
                         "or a codec this OpenCV build cannot decode)")
    frames = int(max(0.0, capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    fps = capture.get(cv2.CAP_PROP_FPS)
    info = VideoInfo(path, frames, fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS,
                     int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    return capture, info


def _opencv_name(path: Path) -> str:
    """``path`` as OpenCV takes it; :class:`VideoError` for a name that is not UTF-8 (bytes a Linux file system
    allows, e.g. from an old archive), on which OpenCV's Python binding crashes the whole process."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise VideoError(f"{path}: the name is not valid UTF-8, which OpenCV cannot open; rename the file (or its "
                         "folder)") from None
    return str(path)


@contextmanager
def _opencv_log_off() -> Iterator[None]:
    """Within, OpenCV logs nothing: a file it cannot open gets our one line, not its warnings and errors too."""
    previous = cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def probe_video(path: str | Path) -> VideoInfo:
    """The header of video ``path`` (for a progress bar's total), or :class:`VideoError`."""
    capture, info = open_video(path)
    capture.release()
    return info


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of video ``path`` as uint8 RGB arrays, until the stream ends or stops decoding."""
    capture, _ = open_video(path)
    try:
        for _, frame in _numbered_frames(capture):
            yield frame
    finally:
        capture.release()


def segment_video(
    predictor: Predictor,
    path: str | Path,
    overlay_path: str | Path,
    *,
    masks_dir: str | Path | None = None,
    alpha: float = 0.5,
    batch_size: int = 1,
    on_frame: Callable[[], None] | None = None,
    replace_masks: bool = False,
    exclusive: bool = False,
) -> VideoResult:
    """Segment every frame of ``path``; write the overlays (with legend) to ``overlay_path`` at the input's size
    (odd sides padded by one edge pixel where the codec needs even ones) and frame rate, and each frame's palette
    mask as ``masks_dir/000001.png``... when given; ``replace_masks`` then removes the frame masks of that naming
    this call did not write (an earlier, longer video's), and nothing else there. ``exclusive`` creates the overlay
    and each mask only where no file is (UserError otherwise), so a file that appeared meanwhile is not replaced.

    ``on_frame`` is called after each frame is written (a progress bar). A stream that ends before its declared
    frame count raises :class:`VideoError` naming the first missing frame, after closing the overlay file so
    the frames before it stay playable; so do frames too small for the codec, before anything is written. The
    file's extension picks the codec (``.mp4``, ``.webm``, ``.avi``). An ``overlay_path`` that is ``path`` itself, or
    a folder, is a UserError.
    """
    # clip.with_suffix(".mp4") of an .mp4: its overlay would replace it.
    check_new_files([overlay_path], flag="overlay_path", overwrite=True, inputs=[("video", path)])
    capture, info = open_video(path)
    frames = prefetch(_numbered_frames(capture), 2 * batch_size)
    try:
        first = next(frames, None)
        if first is None:  # nothing to write: no empty overlay file is left behind
            raise VideoError(f"{path}: video holds no frames" if info.frames == 0 else
                             f"{path}: frame 1 of {info.frames} could not be decoded (a codec this OpenCV build "
                             "cannot decode, or a corrupt file)")
        try:
            predictor.check_size(first[1], path)
        except DataError as exc:
            raise VideoError(str(exc)) from None
        with _whole_file(Path(overlay_path), exclusive=exclusive) as partial:
            writer, codec = _open_writer(Path(overlay_path), info.fps, first[1].shape[:2], source=path, into=partial)
            digits = max(6, len(str(info.frames)))
            written = _write_all(predictor, chain([first], frames), writer, pad=codec.even, masks_dir=masks_dir,
                                 alpha=alpha, digits=digits, batch_size=batch_size, on_frame=on_frame,
                                 exclusive=exclusive)
    finally:
        frames.close()  # the reading thread is done with the capture before it is released
        capture.release()
    if replace_masks and masks_dir is not None:
        _remove_other_masks(Path(masks_dir), {f"{index:0{digits}d}.png" for index in range(1, written + 1)})
    if ends_early(written, info):
        raise VideoError(f"{path}: frame {written + 1} of {info.frames} could not be decoded (truncated or corrupt "
                         f"file); the {written} frames before it are in {overlay_path}", frames_written=written)
    return VideoResult(Path(overlay_path), None if masks_dir is None else Path(masks_dir), written, info)


def ends_early(frames: int, info: VideoInfo) -> bool:
    """Whether ``frames`` decoded frames fall short of what the header of ``info.path`` announces.

    An estimated count (Matroska/WebM) may overshoot by up to 1% (at least one frame) before it counts.
    """
    slack = max(1, info.frames // 100) if info.path.suffix.lower() in _ESTIMATED_COUNT else 0
    return frames < info.frames - slack


def _write_all(predictor: Predictor, frames: Iterator[tuple[int, np.ndarray]], writer: cv2.VideoWriter, *,
               pad: bool, masks_dir: str | Path | None, digits: int, alpha: float, batch_size: int,
               on_frame: Callable[[], None] | None, exclusive: bool) -> int:
    """Segment ``frames`` into ``writer`` (released even on errors, so the file stays playable), odd sides padded
    when ``pad``, masks created only where no file is when ``exclusive``; returns the count."""
    if masks_dir is not None:
        masks_dir = Path(masks_dir)
        masks_dir.mkdir(parents=True, exist_ok=True)

    def write(index: int, frame: np.ndarray, prediction: Prediction) -> None:
        drawn = cv2.cvtColor(overlay(frame, prediction.mask, alpha=alpha, class_names=predictor.class_names),
                             cv2.COLOR_RGB2BGR)
        writer.write(_pad_to_even(drawn) if pad else drawn)
        if masks_dir is not None:
            save_frame_mask(masks_dir / f"{index:0{digits}d}.png", prediction.mask, exclusive=exclusive)

    written = 0
    try:
        for _ in segment_stream(predictor, frames, write, batch_size=batch_size):
            written += 1
            if on_frame is not None:
                on_frame()
    except OSError as exc:
        raise UserError(f"{masks_dir}: cannot write masks ({exc.strerror or exc})") from None
    finally:
        writer.release()
    return written


def _numbered_frames(capture: cv2.VideoCapture) -> Iterator[tuple[int, np.ndarray]]:
    """``(1-based index, RGB frame)`` until the stream ends or stops decoding (a frame of another size ends it)."""
    index, size = 0, None
    while True:
        try:
            ok, frame = capture.read()
        except cv2.error:
            return
        if not ok or frame is None or (size is not None and frame.shape != size):
            return
        index, size = index + 1, frame.shape
        yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


@contextmanager
def _whole_file(path: Path, *, exclusive: bool) -> Iterator[Path]:
    """A temporary file beside ``path``, of its ending (which picks the codec), renamed to ``path`` once written and
    removed when writing fails or is interrupted: ``path`` is whole or absent, an earlier one intact. ``exclusive``
    first claims ``path``, UserError where it exists."""
    if exclusive:
        claim_new_file(path)
    try:
        handle, partial = temporary_beside(path, suffix=path.suffix)  # the ending picks OpenCV's codec
        os.close(handle)
    except OSError as exc:
        if exclusive:
            path.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write the overlay video ({exc.strerror or exc})") from None
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        if exclusive:
            path.unlink(missing_ok=True)  # the empty file claimed above
        raise


def _open_writer(path: Path, fps: float, size: tuple[int, int], *, source: str | Path, into: Path
                 ) -> tuple[cv2.VideoWriter, _Codec]:
    """An OpenCV writer into ``into`` for the overlay video ``path`` of ``size`` (h, w) frames of ``source`` at
    ``fps`` (padded to even sides where the codec needs them), and the codec, chosen by ``path``'s ending;
    :class:`VideoError` for frames it cannot take."""
    codec = _CODECS.get(path.suffix.lower())
    if codec is None:
        raise UserError(f"{path}: cannot write videos ending {path.suffix!r}; use one of {', '.join(_CODECS)}")
    height, width = size
    if codec.even:
        height, width = height + height % 2, width + width % 2
    if min(size) < codec.min_side or height * width < codec.min_pixels:
        raise VideoError(f"{source}: frames of {size[1]}x{size[0]} pixels are too small to encode ({codec.fourcc} "
                         f"needs at least {codec.min_side} pixels a side and {codec.min_pixels} in all)")
    _opencv_name(path)  # a name that is not UTF-8 is said of the overlay, not of its temporary file
    writer = cv2.VideoWriter(str(into), cv2.VideoWriter_fourcc(*codec.fourcc), fps, (width, height))
    if not writer.isOpened():
        raise UserError(f"{path}: cannot write the overlay video (folder not writable, or no {codec.fourcc} "
                        "encoder)")
    return writer, codec


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
    """``frame`` with one more bottom row and right column, copies of the edge, where its sides are odd."""
    bottom, right = frame.shape[0] % 2, frame.shape[1] % 2
    if not (bottom or right):
        return frame
    return cv2.copyMakeBorder(frame, 0, bottom, 0, right, cv2.BORDER_REPLICATE)


def _remove_other_masks(masks_dir: Path, keep: set[str]) -> None:
    """Remove the frame masks an earlier run wrote (``<digits>.png`` with the prediction marker) in ``masks_dir``
    and not named in ``keep``; other files, a user's own numbered PNGs among them, stay."""
    try:
        for path in masks_dir.iterdir():
            if (path.name not in keep and _FRAME_MASK.fullmatch(path.name) and path.is_file()
                    and is_prediction_file(path)):
                path.unlink()
    except OSError as exc:
        raise UserError(f"{masks_dir}: cannot remove an earlier video's frame masks ({exc.strerror or exc})") from None


def split_videos(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``paths`` split into (images, videos) by file ending, each in the given order."""
    videos = [path for path in paths if is_video(path)]
    return [path for path in paths if not is_video(path)], videos
