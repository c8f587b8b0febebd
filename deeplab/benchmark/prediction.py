"""Predict section: a folder of VOC-sized photos through today's one-at-a-time loop (decode, predict, write, in
turn) against the pipelined runner (decoding and writing on background threads, batches where sizes allow);
and a 512x512 video frame by frame against the pipelined video path. Whole runs are timed interleaved."""
from __future__ import annotations

import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from datasets import read_rgb

from ..inference import Predictor, create_engine, overlay, resolve_engine
from ..inference.calibration import Calibration, spread
from ..inference.engines import SPECS
from ..inference.outputs import PredictionWriter
from ..inference.pipeline import segment_files
from ..inference.predictor import prepare_image
from ..inference.video import read_frames, segment_video
from ..models import build_model

__all__ = ["prediction_rows", "write_photos", "write_video"]

#: PASCAL VOC photos are about 500x375, landscape three times as often as portrait.
VOC_SIZES = ((375, 500), (375, 500), (375, 500), (500, 375))


def prediction_rows(*, size: int, warmup: int, repeats: int, checkpoints: Sequence[str] = (), engine: str = "auto",
                    images: int = 100, frames: int = 50, batch_sizes: Sequence[int] = (1, 4)) -> list[dict]:
    """Images/s on a folder of ``images`` photos and frames/s on a ``size`` x ``size`` clip, median and spread."""
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        root = Path(tmp)
        photos = write_photos(root / "photos", images)
        predictor = _predictor(checkpoints, engine, photos)
        clip = write_video(root / "clip.mp4", frames, size)
        runs: dict[str, tuple[str, int, Callable[[Path], None]]] = {
            "folder, one at a time (decode, predict, write)": ("img/s", images,
                                                                lambda out: _one_at_a_time(predictor, photos, out)),
            **{f"folder, pipelined, batch {b}": ("img/s", images,
                                                 lambda out, b=b: _pipelined(predictor, photos, out, b))
               for b in batch_sizes},
            f"video {size}x{size}, frame by frame": ("frames/s", frames,
                                                     lambda out: _video_loop(predictor, clip, out / "loop.mp4")),
            f"video {size}x{size}, pipelined": ("frames/s", frames,
                                                lambda out: segment_video(predictor, clip, out / "piped.mp4")),
        }
        rates = _interleaved(runs, root, warmup=warmup, repeats=repeats)
    folder_base = statistics.median(next(iter(rates.values())))
    video_base = statistics.median(rates[f"video {size}x{size}, frame by frame"])
    rows = []
    for name, (unit, _, _) in runs.items():
        median = statistics.median(rates[name])
        base = folder_base if name.startswith("folder") else video_base
        rows.append({"candidate": name, "engine": predictor.engine_name, "unit": unit, "median": median,
                     "min": min(rates[name]), "max": max(rates[name]), "vs_one_at_a_time": median / base})
    return rows


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs of VOC sizes: smooth gradients with filled shapes (compress like photos, not like noise)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        height, width = VOC_SIZES[index % len(VOC_SIZES)]
        image = _scene(rng, height, width)
        paths.append(folder / f"photo_{index:03d}.jpg")
        cv2.imwrite(str(paths[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths


def write_video(path: Path, frames: int, size: int) -> Path:
    """A ``size`` x ``size`` MPEG-4 clip of ``frames`` frames at 25 fps, a shape sliding over a scene."""
    rng = np.random.default_rng(1)
    background = _scene(rng, size, size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    for index in range(frames):
        frame = background.copy()
        cv2.circle(frame, (index * 7 % size, size // 2), size // 6, (40, 200, 90), -1)
        writer.write(frame)
    writer.release()
    return path


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None] * rng.uniform(60, 200, 3)
    image = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8).copy()
    for _ in range(6):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (_semi_axis(rng, width), _semi_axis(rng, height))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.integers(0, 256, 3).tolist(), -1)
    return image


def _semi_axis(rng: np.random.Generator, side: int) -> int:
    """An ellipse's semi-axis along a ``side``-pixel edge: 20 to a third of the side, scaled down for small sides
    (a 32x32 clip still gets shapes)."""
    low = min(20, max(1, side // 6))
    return int(rng.integers(low, max(side // 3, low + 1)))


def _predictor(checkpoints: Sequence[str], engine: str, photos: Sequence[Path]) -> Predictor:
    """The checkpoint's predictor, else a random-weight MobileNetV2 model with 21 classes (speed only); the int8
    engines calibrate as predict.py's do, on the images to segment when nothing better is at hand."""
    if checkpoints:
        return Predictor.from_checkpoint(checkpoints[0], device="cpu", engine=engine, max_size=1024,
                                         fallback_calibration=photos)
    model = build_model("mobilenetv2").eval()
    concrete = resolve_engine(engine)
    calibration = None
    if SPECS[concrete].calibrated:
        prepare = functools.partial(prepare_image, mean=model.mean, std=model.std, max_size=1024)
        calibration = Calibration(spread(photos), "the benchmark's photos").batches(prepare)
    return Predictor(create_engine(model, engine=concrete, calibration=calibration),
                     class_names=[str(i) for i in range(21)], mean=model.mean, std=model.std,
                     device=torch.device("cpu"), max_size=1024, engine_name=concrete, model_config=model.config)


def _one_at_a_time(predictor: Predictor, photos: list[Path], out: Path) -> None:
    files = PredictionWriter(out, photos, overwrite=True)  # repeats rewrite the benchmark's own files
    for path in photos:
        image = read_rgb(path)
        files.save(path, image, predictor.predict(image).mask, class_names=predictor.class_names, alpha=0.5)


def _pipelined(predictor: Predictor, photos: list[Path], out: Path, batch_size: int) -> None:
    files = PredictionWriter(out, photos, overwrite=True)

    def write(path: Path, image: np.ndarray, prediction) -> None:
        files.save(path, image, prediction.mask, class_names=predictor.class_names, alpha=0.5)

    for _ in segment_files(predictor, photos, write, batch_size=batch_size):
        pass


def _video_loop(predictor: Predictor, clip: Path, target: Path) -> None:
    writer = None
    for frame in read_frames(clip):
        if writer is None:
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, frame.shape[1::-1])
        drawn = overlay(frame, predictor.predict(frame).mask, class_names=predictor.class_names)
        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    writer.release()


def _interleaved(runs: dict[str, tuple[str, int, Callable[[Path], None]]], root: Path, *, warmup: int,
                 repeats: int) -> dict[str, list[float]]:
    """Items per second of each whole run, candidates taking turns so load from other processes hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(warmup + repeats):
        for name, (_, items, run) in runs.items():
            out = Path(tempfile.mkdtemp(dir=root))
            start = time.perf_counter()
            run(out)
            if repeat >= warmup:
                rates[name].append(items / (time.perf_counter() - start))
    return rates
