"""Engines section: every inference engine of ours beside smp (eager, ONNX Runtime, OpenVINO) and torchvision.

Latency (batch 1) and throughput (batch 8) are timed interleaved in one process, ``rounds`` times, and reported
as the median with the spread (min-max) of the rounds' medians: load from other processes moves eager PyTorch far
more than the runtimes. Quality is measured per trained checkpoint on its validation split: agreement (share of
pixels whose class equals the fp32 eager model's) and mIoU, with the same int8 calibration as ``predict.py``
(the checkpoint's training images; where they are not on this machine the int8 engines are skipped). The start-up
rows time ``tools/predict.py`` on one image in a fresh process once its engine is cached.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from datasets import VOCSegmentation, build_eval_transform, load_class_names

from ..checkpoint import load_checkpoint, match_class_names, model_from_checkpoint
from ..errors import UserError
from ..inference import create_engine, resolve_engine
from ..inference.auto import Agreement
from ..inference.calibration import choose_calibration
from ..inference.engines import SPECS
from ..inference.predictor import prepare_image
from ..models import build_model
from .measure import Runner, eager, measure_rounds, onnxruntime_runner, openvino_runner, smp_model

__all__ = ["TrainedCheckpoint", "engine_rows", "load_trained"]

SMP_REFERENCE = "smp mobilenet_v2 eager fp32 channels_last"
REPO = Path(__file__).resolve().parents[2]


def load_trained(checkpoints: Sequence[str], data_roots: Sequence[str] = (), *,
                 ignore_class_names: bool = False) -> list[TrainedCheckpoint]:
    """Each checkpoint with the data root in the same position (else the one it was trained on), checked before any
    timing: a model scored under classes other than its own measures nothing. Each gets score columns of its own."""
    trained = [TrainedCheckpoint(path, data_roots[i] if i < len(data_roots) else None,
                                 ignore_class_names=ignore_class_names) for i, path in enumerate(checkpoints)]
    _label_apart(trained)
    return trained


def _label_apart(trained: Sequence[TrainedCheckpoint]) -> None:
    """Label by checkpoint and data root the checkpoints whose data roots share a folder name (two runs on one data
    set): one label would let one's scores replace the other's. The same pair given twice is refused."""
    names = [checkpoint.label for checkpoint in trained]
    for checkpoint in trained:
        if names.count(checkpoint.label) > 1:
            checkpoint.label = f"{checkpoint.path} on {checkpoint.data_root}"
    labels = [checkpoint.label for checkpoint in trained]
    repeated = next((checkpoint for checkpoint in trained if labels.count(checkpoint.label) > 1), None)
    if repeated is not None:
        raise UserError(f"--checkpoint {repeated.path}: given twice for the data root {repeated.data_root}")


def engine_rows(*, size: int, warmup: int, repeats: int, threads: int, trained: Sequence[TrainedCheckpoint] = (),
                rounds: int = 3) -> list[dict]:
    """One row per engine and peer: latency, spread, ratio to smp eager, batch-8 throughput, and per checkpoint
    (see :func:`load_trained`) agreement with fp32 and mIoU; then the start-up rows of ``predict.py``."""
    model = trained[0].model if trained else build_model("mobilenetv2").eval()
    calibration = trained[0].calibration() if trained else [torch.randn(1, 3, size, size) for _ in range(4)]
    ours = _our_engines(model, calibration)
    runners = {**ours, **_peers()}
    single = measure_rounds(runners, _batch(size, 1), warmup=warmup, repeats=repeats, rounds=rounds)
    eight = measure_rounds(runners, _batch(size, 8), warmup=1, repeats=max(1, repeats // 3), rounds=rounds)
    reference = _median(single[SMP_REFERENCE])
    rows = {name: {"model": name, "latency_ms": _median(single[name]), "spread_ms": _spread(single[name]),
                   "vs_smp": _median(single[name]) / reference, "batch8_img_per_s": 8000 / _median(eight[name])}
            for name in runners}
    for index, checkpoint in enumerate(trained):
        engines = ours if index == 0 else _our_engines(checkpoint.model, checkpoint.calibration())
        for name, scores in checkpoint.quality(engines).items():
            rows[name] |= scores
    return list(rows.values()) + (_startup_rows(trained[0], threads) if trained else [])


class TrainedCheckpoint:
    """A trained checkpoint, its validation data (``data_root``, else the data root it was trained on) and the
    class names to score under (as ``eval.py``: the checkpoint's and the data's must agree unless
    ``ignore_class_names``)."""

    def __init__(self, path: str, data_root: str | None, *, ignore_class_names: bool = False) -> None:
        self.path = path
        self.ckpt = load_checkpoint(path)
        self.model = model_from_checkpoint(self.ckpt, path).eval()
        self.data_root = data_root or (self.ckpt.get("args") or {}).get("data_root")
        if not self.data_root:
            raise UserError(f"{path}: the checkpoint names no data root; pass --data-root for it")
        self.class_names = match_class_names(path, self.ckpt, load_class_names(self.data_root),
                                             data_root=self.data_root, allow_mismatch=ignore_class_names)
        self.label = Path(self.data_root).name
        #: The validation split scored after the timing, opened now so a missing one stops the run before it.
        self.val = VOCSegmentation(self.data_root, split="val",
                                   transform=build_eval_transform(mean=self.model.mean, std=self.model.std))

    def calibration(self) -> list[torch.Tensor] | None:
        """The int8 calibration predict.py would use (the checkpoint's training images), preprocessed alike; None
        where those images are not on this machine (the int8 engines are then skipped, the others measured)."""
        chosen = choose_calibration(None, self.ckpt)
        if chosen is None:
            return None
        return chosen.batches(functools.partial(prepare_image, mean=self.model.mean, std=self.model.std, max_size=None))

    def quality(self, engines: dict[str, Runner]) -> dict[str, dict[str, float]]:
        """Per engine: agreement with fp32 eager and mIoU on the validation split, one image at a time (VOC's 1449
        images and their class maps held at once would take gigabytes)."""
        agreements = {name: Agreement(len(self.class_names)) for name in engines}
        with torch.inference_mode():
            for image, mask in self.val:
                reference = self.model(image[None]).argmax(1)
                for name, run in engines.items():
                    agreements[name].update(run(image[None]).argmax(1), reference, mask[None])
        scores = {}
        for name, agreement in agreements.items():
            share, miou = agreement.result()
            scores[name] = {f"agreement {self.label}": share, f"miou {self.label}": miou}
        return scores


def _our_engines(model: nn.Module, calibration: list[torch.Tensor] | None) -> dict[str, Runner]:
    """Every engine of ours that runs here; the int8 ones only with ``calibration``."""
    runners = {}  # not auto: it stands for one of these, chosen per checkpoint (the start-up rows name it)
    for engine in SPECS:
        if SPECS[engine].calibrated and calibration is None:
            print(f"  skipped engine {engine}: no calibration images (the checkpoint's training images are not on "
                  "this machine)", file=sys.stderr)
            continue
        try:
            resolve_engine(engine)
            label = f"ours {engine} ({SPECS[engine].runtime} {SPECS[engine].precision})"
            runners[label] = create_engine(model, engine=engine,
                                           calibration=calibration if SPECS[engine].calibrated else None)
        except ValueError as exc:
            print(f"  skipped engine {engine}: {exc}", file=sys.stderr)
    return runners


def _peers() -> dict[str, Runner]:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    smp = smp_model("mobilenet_v2")
    torchvision_model = eager(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None).eval())
    peers = {SMP_REFERENCE: eager(smp), "smp mobilenet_v2 onnxruntime f32": onnxruntime_runner(smp)}
    for engine in ("openvino", "openvino-bf16"):
        try:
            resolve_engine(engine)
        except ValueError as exc:
            print(f"  skipped smp on {engine}: {exc}", file=sys.stderr)
            continue
        precision = SPECS[engine].precision
        peers[f"smp mobilenet_v2 openvino {precision}"] = openvino_runner(smp, precision)
    peers["torchvision deeplabv3_mobilenet_v3_large eager"] = lambda x: torchvision_model(x)["out"]
    return peers


def _batch(size: int, n: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


# Runs its arguments as a child and reports the child's wall time and peak RSS (KiB on Linux): the only child of this
# small process, so the peak is predict.py's own.
STARTUP_PROBE = """
import resource, subprocess, sys, time
started = time.perf_counter()
status = subprocess.run(sys.argv[1:]).returncode
print(status, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _startup_rows(trained: TrainedCheckpoint, threads: int) -> list[dict]:
    """Wall time and peak memory of ``python tools/predict.py`` on one validation image with the engine cached."""
    image = trained.val.image_path(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="deeplab-startup-") as out:
        for engine in ("auto", "torch"):
            predict = [sys.executable, str(REPO / "tools" / "predict.py"), str(image), "--checkpoint", trained.path,
                       "--engine", engine, "--out"]  # each run its own folder: predict never replaces files
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            # The first run builds and caches the engine (and verifies auto's choice, which it prints).
            first = subprocess.run([*predict, f"{out}/{engine}-first"], check=True, capture_output=True, text=True,
                                   env=env).stdout
            chosen = next((line.split(" -> ")[1].split(" ")[0] for line in first.splitlines()
                           if line.startswith("engine auto -> ")), None)
            done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, *predict, f"{out}/{engine}-cached"],
                                  check=True, capture_output=True, text=True, env=env)
            status, wall, peak_kib = done.stdout.split()[-3:]
            if status != "0":
                raise RuntimeError(f"predict.py exited with {status}: {done.stderr[-500:]}")
            named = f"{engine} (= {chosen})" if chosen else engine
            rows.append({"model": f"predict.py on one image, --engine {named} (engine cached, fresh process)",
                         "wall_s": float(wall), "peak_rss_mib": int(peak_kib) / 1024})
    return rows
