"""``auto`` on the CPU: the fastest engine that keeps this checkpoint's answer on this machine, decided once by
measuring it on the checkpoint's own held-out images, and cached.

Candidates, fastest first (AMD EPYC Zen 5 with AVX512-BF16 and AVX512-VNNI, quiet, 2 threads, 512x512, batch 1,
a trained checkpoint): ``openvino-int8`` 12 ms, ``int8`` 16, ``openvino-bf16`` 18, ``torch-bf16`` 39; then the exact
fallback, ONNX Runtime fp32 (42 ms; PyTorch fp32 where ONNX Runtime is not installed). A candidate is tried only where it is
installed and pays off:

- bf16 needs native bf16 kernels (AVX512-BF16 or AMX), checked as an explicit ``--engine`` is checked.
- int8 needs VNNI (AVX512-VNNI, AVX-VNNI, AMX-INT8) or AVX-512BW among the CPU's flags (``/proc/cpuinfo``): there
  an int8 multiply-add is one wide instruction; on AVX2 alone it takes three, and int8 was never measured faster
  there. Where the flags cannot be read (not Linux), int8 is not tried.
- int8 calibrates as it does for an explicit ``--engine``: on ``--calibration DIR``, else on the checkpoint's
  training images. With neither, ``auto`` does not try int8 (calibrating on the images to predict would tie the
  choice to each call's inputs).

Verification images: up to :data:`VERIFY_IMAGES` spread over the checkpoint's validation split (its run arguments
name the data root and ``val_split``) with their masks, held out from training and from int8's calibration (the
training split). Where that split is not on this machine, the ``--calibration`` images serve instead (no masks,
and int8 is then checked on its own calibration images: a kinder test, which the printed line names). With
neither, ``auto`` stays on exact fp32 and says why.

Rule: a candidate is accepted when its class equals the fp32 PyTorch model's on >= 99.5% of the verification
pixels (at the model's input size) and, where every image has a mask, its mIoU on them is at most 0.5 points below
fp32's; the first accepted candidate is chosen, else the exact fallback. A candidate that fails to build is
skipped with a warning.

The decision is a small JSON record beside the engine cache's entries (:mod:`.cache`), named by a digest of its
key: the checkpoint's content hash, how the model is run (another output stride), the candidates' library
versions, the CPU flags that matter, the verification images' bytes and whether they are shrunk, int8's
calibration images and the rule. A later run with the same key reads it and builds (or loads) the chosen engine
without verifying again; a record that cannot be read is redone.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from datasets import DataError, read_label_png, read_rgb
from datasets.errors import one_line
from datasets.image_files import ColourTable
from datasets.voc import find_image, load_mask_colours, voc_dir

from .cache import EngineCache, code_digest, library_versions
from .calibration import NAMED, Calibration, effective_max_size, split_ids, spread
from .engines import SPECS, resolve_engine
from .tta import Engine, class_scores

__all__ = [
    "AUTO_CANDIDATES", "MAX_MIOU_LOSS", "MIN_AGREEMENT", "VERIFY_IMAGES", "Agreement", "AutoChoice", "Verification",
    "choose_auto", "compare", "cpu_flags", "int8_pays", "verification_images",
]

#: Reduced-precision engines ``auto`` tries on the CPU, fastest first (see the module docstring).
AUTO_CANDIDATES = ("openvino-int8", "int8", "openvino-bf16", "torch-bf16")
MIN_AGREEMENT = 0.995
MAX_MIOU_LOSS = 0.005
VERIFY_IMAGES = 16
#: CPU flags under which int8 runs fast; the record's key holds these and the bf16 ones.
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx512bw"})
_KEY_FLAGS = INT8_FLAGS | {"avx512_bf16", "amx_bf16", "amx_tile", "avx2", "avx512f"}
_FORMAT = 1


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in ``/proc/cpuinfo``; empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def int8_pays(flags: frozenset[str]) -> bool:
    """Whether int8 engines run fast on a CPU with ``flags``: VNNI or AVX-512BW (see the module docstring)."""
    return bool(flags & INT8_FLAGS)


@dataclass(frozen=True)
class AutoChoice:
    """The engine ``auto`` stands for, why, and the engine itself when verifying already built it."""

    engine: str
    reason: str
    run: Engine | None = None

    @property
    def line(self) -> str:
        return f"engine auto -> {self.engine} ({self.reason})"


@dataclass(frozen=True)
class Verification:
    """Images a choice is checked on, each one's mask (``None`` where it has none), what they are, and the colours of
    RGB masks (the data's labelmap.txt or the VOC palette; ``None`` without masks)."""

    images: tuple[Path, ...]
    masks: tuple[Path | None, ...]
    kind: str  # "validation" or "--calibration": how the printed line names them
    colours: ColourTable | None = None

    def digest(self, max_size: int | None) -> str:
        """SHA-256 of the images' and masks' bytes and of the size limit they are shrunk to (if it shrinks any)."""
        digest = hashlib.sha256(f"{len(self.images)}:{effective_max_size(self.images, max_size)}".encode())
        digest.update(self.colours.fingerprint().encode() if self.colours else b"no colours")
        for path in (*self.images, *self.masks):
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest() if path else b"none")
            except OSError:
                digest.update(b"unreadable")
        return digest.hexdigest()

    def load(self, prepare: Callable[[np.ndarray], torch.Tensor],
             num_classes: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The readable images as model inputs, each with its mask at the input's size (``None`` if unreadable)."""
        import cv2

        samples = []
        for image_path, mask_path in zip(self.images, self.masks):
            try:
                image = prepare(read_rgb(image_path))
            except DataError:
                continue
            mask = None
            try:
                if mask_path is not None:
                    height, width = image.shape[-2:]
                    mask = read_label_png(mask_path, num_classes, (self.colours,))
                    mask = torch.from_numpy(cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST))[None]
            except DataError:
                mask = None
            samples.append((image, mask))
        return samples


def verification_images(ckpt: dict[str, Any], calibration: Calibration | None) -> Verification | str:
    """The checkpoint's validation images, else the ``--calibration`` ones; else why there are none (a phrase)."""
    args = ckpt.get("args") or {}
    root, split = args.get("data_root"), args.get("val_split") or "val"
    ids = split_ids(root, split) if root else None
    if ids:
        base = voc_dir(root)
        images = {i: find_image(base / "JPEGImages", i) for i in spread(ids, VERIFY_IMAGES)}
        chosen = [i for i, image in images.items() if image.is_file()]
        if chosen:
            masks, colours = _validation_masks(root, chosen)
            return Verification(tuple(images[i] for i in chosen), masks, "validation", colours)
    if calibration is not None and calibration.source == NAMED:
        paths = spread(list(calibration.paths), VERIFY_IMAGES)
        return Verification(paths, (None,) * len(paths), "--calibration")
    if not root:
        return "the checkpoint names no validation data (not written by train.py here)"
    return f"its validation split {split!r} under {root} is not on this machine"


def _validation_masks(root: str, ids: Sequence[str]) -> tuple[tuple[Path | None, ...], ColourTable | None]:
    """The masks of ``ids`` (``None`` where missing) and the colours of RGB ones; no masks where the data's
    labelmap.txt cannot be read, as for unreadable masks."""
    try:
        colours = load_mask_colours(root)
    except DataError:
        return (None,) * len(ids), None
    masks = [voc_dir(root) / "SegmentationClass" / f"{i}.png" for i in ids]
    return tuple(m if m.is_file() else None for m in masks), colours


class Agreement:
    """Running share of pixels where class maps equal the reference's, and their confusion with the true masks for
    mIoU (``num_classes`` None: no masks): fed one image at a time, so a whole split need not be held at once."""

    def __init__(self, num_classes: int | None) -> None:
        from ..evaluation import ConfusionMatrix  # deferred: only a verification or the benchmark needs it

        self.same = self.total = 0
        self.matrix = ConfusionMatrix(num_classes) if num_classes is not None else None

    def update(self, predicted: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add one class map ``predicted``, the reference's ``expected`` and (with masks) its true ``mask``."""
        self.same += int((predicted.cpu() == expected.cpu()).sum())
        self.total += expected.numel()
        if self.matrix is not None:
            self.matrix.update(predicted.cpu(), mask)

    def result(self) -> tuple[float, float | None]:
        """The share of agreeing pixels, and the mIoU (None without masks)."""
        return self.same / max(self.total, 1), self.matrix.scores()["miou"] if self.matrix is not None else None


def compare(predicted: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
            masks: Sequence[torch.Tensor] | None, num_classes: int) -> tuple[float, float | None]:
    """Share of pixels where ``predicted`` equals ``expected`` (class maps), and ``predicted``'s mIoU against
    ``masks`` (``None`` without masks)."""
    agreement = Agreement(num_classes if masks is not None else None)
    for i, (p, e) in enumerate(zip(predicted, expected)):
        agreement.update(p, e, masks[i] if masks is not None else None)
    return agreement.result()


def choose_auto(
    cache: EngineCache,
    checkpoint_sha256: str,
    *,
    ckpt: dict[str, Any],
    build: Callable[[str], Engine],
    reference: Callable[[], torch.nn.Module],
    calibration: Calibration | None,
    prepare: Callable[[np.ndarray], torch.Tensor],
    max_size: int | None,
    variant: str | None = None,
) -> AutoChoice:
    """What ``auto`` runs on the CPU for this checkpoint (the module docstring's rule), from the cached record when
    one matches. ``build(engine)`` prepares an engine (through the engine cache), ``reference()`` is the fp32 model;
    ``calibration`` is int8's (``None``: int8 is not tried)."""
    exact = resolve_engine("auto", "cpu")
    verification = verification_images(ckpt, calibration)
    if isinstance(verification, str):
        return AutoChoice(exact, f"exact fp32: no validation images to check a faster engine on; {verification}")
    flags = cpu_flags()
    key = {
        "format": _FORMAT, "checkpoint_sha256": checkpoint_sha256, "variant": variant,
        "rule": {"candidates": AUTO_CANDIDATES, "min_agreement": MIN_AGREEMENT, "max_miou_loss": MAX_MIOU_LOSS},
        "versions": {**library_versions("torch", "onnxruntime", "openvino", "nncf"), "deeplab-code": code_digest()},
        "cpu_flags": sorted(flags & _KEY_FLAGS),
        "images": verification.digest(max_size),
        "calibration": calibration.digest(max_size) if calibration is not None and int8_pays(flags) else None,
    }
    key = json.loads(json.dumps(key))
    name = "auto-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".json"
    record = cache.read_record(name)
    if record is not None:
        reason = _reason(record, key, exact, "checked once, cached")
        if reason is not None:
            return AutoChoice(record["engine"], reason)
        print(f"warning: {name}: a record of another or a damaged choice; checking again", file=sys.stderr)
    tried = _candidates(flags, int8=key["calibration"] is not None)
    num_classes = int(ckpt["model_config"].get("num_classes", 21))
    record, run = _verify(tried, exact, verification, build=build, reference=reference, prepare=prepare,
                          num_classes=num_classes)
    record["key"] = key
    stored = cache.write_record(name, record)
    when = "checked now and cached" if stored else "checked now; not cached: no writable cache folder"
    return AutoChoice(record["engine"], _reason(record, key, exact, when), run)


def _candidates(flags: frozenset[str], *, int8: bool) -> list[str]:
    """:data:`AUTO_CANDIDATES` that run on this CPU and pay off, fastest first."""
    found = []
    for engine in AUTO_CANDIDATES:
        if SPECS[engine].calibrated and not (int8 and int8_pays(flags)):
            continue
        try:
            resolve_engine(engine, "cpu")  # installed (NNCF too for openvino-int8), and native bf16 for bf16
        except ValueError:
            continue
        found.append(engine)
    return found


def _verify(candidates: Sequence[str], exact: str, verification: Verification, *, build: Callable[[str], Engine],
            reference: Callable[[], torch.nn.Module], prepare: Callable[[np.ndarray], torch.Tensor],
            num_classes: int) -> tuple[dict, Engine | None]:
    """Check ``candidates`` in order against the fp32 model; the record of what was measured and what was chosen,
    and the chosen candidate's engine (``None`` for the exact fallback, which is built afterwards)."""
    record = {"engine": exact, "candidates": list(candidates), "kind": verification.kind, "images": 0,
              "reference_miou": None, "checks": [], "checked": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not candidates:
        return record, None
    samples = verification.load(prepare, num_classes)
    record["images"] = len(samples)
    if not samples:
        return record, None
    print(f"auto: checking {', '.join(candidates)} against fp32 on {len(samples)} {verification.kind} images "
          "(once: the choice is cached)", file=sys.stderr)
    masks = [mask for _, mask in samples] if all(mask is not None for _, mask in samples) else None
    expected = _classes(reference().eval(), samples)
    record["reference_miou"] = compare(expected, expected, masks, num_classes)[1]
    for engine in candidates:
        try:
            run = build(engine)
            predicted = _classes(run, samples)
        except Exception as exc:  # a candidate that cannot run here is skipped, never fatal for auto
            print(f"warning: auto: skipped {engine}: {one_line(exc)}", file=sys.stderr)
            record["checks"].append({"engine": engine, "error": one_line(exc)})
            continue
        agreement, miou = compare(predicted, expected, masks, num_classes)
        record["checks"].append({"engine": engine, "agreement": agreement, "miou": miou})
        print(f"auto: {engine}: {_percent(agreement)} of pixels agree with fp32", file=sys.stderr)
        if _accepted(record["checks"][-1], record["reference_miou"]):
            record["engine"] = engine
            return record, run
    return record, None


def _classes(run: Callable[[torch.Tensor], torch.Tensor], samples: Sequence[tuple[torch.Tensor, Any]]) -> list:
    """Each sample's argmax; NaN or infinite scores raise, as their argmax would agree with any mask of class 0."""
    with torch.inference_mode():
        return [class_scores(run, image).argmax(1) for image, _ in samples]


def _accepted(check: dict, reference_miou: float | None) -> bool:
    if "error" in check or check["agreement"] < MIN_AGREEMENT:
        return False
    return check["miou"] is None or reference_miou is None or reference_miou - check["miou"] <= MAX_MIOU_LOSS


def _reason(record: dict, key: dict, exact: str, when: str) -> str | None:
    """The printed reason for a record, or ``None`` when the record does not fit ``key`` or is malformed."""
    try:
        if record.get("key") != key or record["engine"] not in (exact, *AUTO_CANDIDATES):
            return None
        checks, images, kind = record["checks"], int(record["images"]), str(record["kind"])
        if not record["candidates"]:
            return f"exact fp32: this CPU runs no faster engine here (bf16 needs native bf16; int8 VNNI or " \
                   f"AVX-512 and calibration images); {when}"
        if not images:
            return f"exact fp32: none of the {kind} images could be read; {when}"
        described = [f"{c['engine']} " + ("failed" if "error" in c else _described(c, record["reference_miou"]))
                     for c in checks]
        pixels = f"{images} {kind} images' pixels"
        if record["engine"] == exact:
            return (f"exact fp32: no faster engine kept >= {_percent(MIN_AGREEMENT)} of {pixels} "
                    f"({', '.join(described)}); {when}")
        chosen = checks[-1]
        text = f"{_percent(chosen['agreement'])} of {pixels} agree with fp32"
        if chosen["miou"] is not None:
            text += f", mIoU {chosen['miou']:.4f} vs {record['reference_miou']:.4f}"
        if len(checks) > 1:
            text += f"; faster ones fell short: {', '.join(described[:-1])}"
        if kind == "--calibration" and SPECS[record["engine"]].calibrated:
            text += "; int8 was calibrated on the same images"
        return f"{text}; {when}"
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _described(check: dict, reference_miou: float | None) -> str:
    text = _percent(check["agreement"])
    if check["miou"] is not None and reference_miou is not None and reference_miou - check["miou"] > MAX_MIOU_LOSS:
        text += f" but mIoU -{100 * (reference_miou - check['miou']):.2f} points"
    return text


def _percent(share: float) -> str:
    """``share`` as a percentage with two decimals, rounded down (99.496% never reads as the 99.50% it missed)."""
    return f"{math.floor(share * 10000) / 100:.2f}%"
