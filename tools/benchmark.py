"""Benchmark our DeepLabV3+ against segmentation_models_pytorch and torchvision, in one run, on this CPU.

    python tools/benchmark.py --section core        # ours (separable / not) vs smp mobilenet_v2: params, GMACs, latency
    python tools/benchmark.py --section backbones   # every registered backbone at OS16 and OS8 (+ smp twins)
    python tools/benchmark.py --section engines --checkpoint best.pt --data-root ../shared/data/voc_mini
    python tools/benchmark.py --section core --json core.json

Latency: batch 1, fp32 unless the engine says otherwise, channels_last for eager models, warm-up calls,
then the median of ``--repeats`` calls; candidates run round-robin so load from other processes hits all
of them alike. Ratios are to smp's DeepLabV3Plus(mobilenet_v2) measured in the same run.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # our `datasets`, not Hugging Face's

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from backbones import list_backbones  # noqa: E402
from deeplab.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from deeplab.errors import UserError, report_user_errors  # noqa: E402
from deeplab.export import export_onnx, onnx_session  # noqa: E402
from deeplab.inference import ENGINES, create_engine, resolve_engine  # noqa: E402
from deeplab.model import build_model  # noqa: E402

SMP_ENCODERS = {"mobilenetv2": "mobilenet_v2", "mobilenetv3_large": "tu-mobilenetv3_large_100", "xception65": "tu-xception65"}
Runner = Callable[[torch.Tensor], Any]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=("core", "backbones", "engines"), action="append",
                        help="what to measure (repeatable; default: all three)")
    parser.add_argument("--size", type=int, default=512, help="input height and width (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per candidate (median reported)")
    parser.add_argument("--backbones", nargs="+", help="backbones section: these only (default: all registered)")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="backbones: report its best_miou beside its (backbone, OS); engines: model to use")
    parser.add_argument("--data-root", help="engines: VOC-format folder to measure agreement and mIoU on (val split)")
    parser.add_argument("--json", help="also write every row to this JSON file")
    return parser


def measure(runners: dict[str, Runner], batch: torch.Tensor, *, warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each runner on ``batch``, timed round-robin."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runners.values():
                run(batch)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(batch)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def eager(model: nn.Module) -> Runner:
    """fp32 eager channels_last, as users of smp or torchvision would run it."""
    model = model.eval().to(memory_format=torch.channels_last)
    return lambda x: model(x.contiguous(memory_format=torch.channels_last))


def onnxruntime_runner(model: nn.Module) -> Runner:
    """The model exported to ONNX and run by ONNX Runtime (same settings as our ``onnxruntime`` engine)."""
    buffer = io.BytesIO()
    export_onnx(model.eval(), buffer)
    session = onnx_session(buffer.getvalue())
    return lambda x: session.run(None, {"input": x.numpy()})


def model_stats(model: nn.Module, size: int) -> dict[str, float]:
    """Parameters (M) and GMACs (FLOPs / 2, counted by torch's FlopCounterMode) at ``size x size``."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(torch.randn(1, 3, size, size))
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "gmacs": counter.get_total_flops() / 2e9}


def smp_model(encoder: str, output_stride: int = 16) -> nn.Module:
    """smp's DeepLabV3Plus with random weights (no download) and our 21 classes (smp's default is 1)."""
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(
        encoder_name=encoder, encoder_weights=None, encoder_output_stride=output_stride, classes=21
    )


def section_core(args: argparse.Namespace) -> list[dict]:
    """Issue 2: ours (separable and not) vs smp DeepLabV3Plus(mobilenet_v2)."""
    models = {
        "ours mobilenetv2 separable": build_model("mobilenetv2"),
        "ours mobilenetv2 separable=False": build_model("mobilenetv2", separable=False),
        "smp DeepLabV3Plus mobilenet_v2": smp_model("mobilenet_v2"),
    }
    latency = measure({k: eager(m) for k, m in models.items()}, _batch(args, 1), warmup=args.warmup, repeats=args.repeats)
    reference = latency["smp DeepLabV3Plus mobilenet_v2"]
    return [{"model": k, **model_stats(m, args.size), "latency_ms": latency[k], "vs_smp": latency[k] / reference}
            for k, m in models.items()]


def section_backbones(args: argparse.Namespace) -> list[dict]:
    """Issue 4: each registered backbone at OS16 and OS8, beside smp with the matching encoder."""
    mious = _checkpoint_mious(args.checkpoint)
    rows = []
    for name in args.backbones or list_backbones():
        for output_stride in (16, 8):
            models = {f"ours {name} OS{output_stride}": build_model(name, output_stride=output_stride)}
            if name in SMP_ENCODERS:
                models[f"smp {SMP_ENCODERS[name]} OS{output_stride}"] = smp_model(SMP_ENCODERS[name], output_stride)
            latency = measure({k: eager(m) for k, m in models.items()}, _batch(args, 1),
                              warmup=args.warmup, repeats=args.repeats)
            for key, model in models.items():
                miou = mious.get((name, output_stride)) if key.startswith("ours") else None
                rows.append({"model": key, **model_stats(model, args.size), "latency_ms": latency[key], "miou": miou})
            print(f"  measured {name} OS{output_stride}", file=sys.stderr, flush=True)
    return rows


def section_engines(args: argparse.Namespace) -> list[dict]:
    """Issue 7: our engines (mobilenetv2 OS16) beside smp eager, smp under ONNX Runtime and torchvision."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    model = _engine_model(args.checkpoint)
    calibration = _calibration(args.data_root, model)
    runners: dict[str, Runner] = {}
    for engine in ENGINES:
        try:
            label = f"ours engine={engine}" + (f" ({resolve_engine(engine)})" if engine == "auto" else "")
            runners[label] = create_engine(model, engine=engine, calibration=calibration)
        except ValueError as exc:
            print(f"  skipped engine {engine}: {exc}", file=sys.stderr)
    smp = smp_model("mobilenet_v2")
    torchvision_model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    tv_eager = eager(torchvision_model)
    runners |= {"smp mobilenet_v2 eager fp32 channels_last": eager(smp),
                "smp mobilenet_v2 onnxruntime": onnxruntime_runner(smp),
                "torchvision deeplabv3_mobilenet_v3_large eager": lambda x: tv_eager(x)["out"]}
    single = measure(runners, _batch(args, 1), warmup=args.warmup, repeats=args.repeats)
    eight = measure(runners, _batch(args, 8), warmup=1, repeats=max(3, args.repeats // 3))
    reference = single["smp mobilenet_v2 eager fp32 channels_last"]
    quality = _agreement(model, runners, args.data_root) if args.data_root else {}
    rows = [{"model": k, "latency_ms": single[k], "vs_smp": single[k] / reference,
             "batch8_img_per_s": 8000 / eight[k], **quality.get(k, {})} for k in runners]
    rows.append({"model": "peak RSS, predict 512x512 with engine=auto (fresh process)", "rss_mib": _peak_rss(args)})
    return rows


def _engine_model(checkpoints: list[str]) -> nn.Module:
    if len(checkpoints) > 1:
        raise UserError("--section engines: give at most one --checkpoint")
    if not checkpoints:
        return build_model("mobilenetv2").eval()
    return model_from_checkpoint(load_checkpoint(checkpoints[0]), checkpoints[0]).eval()


def _val_batches(data_root: str, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from datasets import VOCSegmentation, build_eval_transform

    dataset = VOCSegmentation(data_root, split="val", transform=build_eval_transform(mean=model.mean, std=model.std))
    return [(image[None], mask[None]) for image, mask in dataset]


def _calibration(data_root: str | None, model: nn.Module) -> list[torch.Tensor]:
    """int8 calibration images: the data's (at most 4), else random noise (then int8 accuracy means little)."""
    if data_root:
        return [image for image, _ in _val_batches(data_root, model)[:4]]
    return [torch.randn(1, 3, 256, 256) for _ in range(4)]


def _agreement(model: nn.Module, runners: dict[str, Runner], data_root: str) -> dict[str, dict[str, float]]:
    """Per engine: share of pixels whose class equals fp32 eager's, and mIoU on the split."""
    from deeplab.metrics import ConfusionMatrix

    batches, num_classes = _val_batches(data_root, model), model.config["num_classes"]
    with torch.inference_mode():
        reference = [model(image).argmax(1) for image, _ in batches]
    out = {}
    for name, run in runners.items():
        if not name.startswith("ours"):
            continue
        matrix, same, total = ConfusionMatrix(num_classes), 0, 0
        with torch.inference_mode():
            for (image, mask), ref in zip(batches, reference):
                pred = run(image).argmax(1).cpu()
                matrix.update(pred, mask)
                same, total = same + int((pred == ref).sum()), total + ref.numel()
        out[name] = {"agreement_vs_fp32": same / total, "miou": matrix.scores()["miou"]}
    return out


def _peak_rss(args: argparse.Namespace) -> float:
    """Peak RSS (MiB, the child's own VmHWM: getrusage would report this parent's peak) of a process that
    imports the library, builds the auto engine and predicts one image."""
    code = (
        f"import sys, torch; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
        f"torch.set_num_threads({args.threads}); from deeplab.model import build_model; "
        "from deeplab.inference import create_engine; "
        f"create_engine(build_model('mobilenetv2').eval(), engine='auto')(torch.randn(1, 3, {args.size}, {args.size})); "
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1]) / 1024


def _checkpoint_mious(paths: list[str]) -> dict[tuple[str, int], float]:
    """(backbone, output stride) -> the best_miou a training run stored in its checkpoint."""
    found = {}
    for path in paths:
        ckpt = load_checkpoint(path)
        config = ckpt["model_config"]
        if "best_miou" in ckpt:
            found[(config["backbone"], config.get("output_stride", 16))] = float(ckpt["best_miou"])
    return found


def _batch(args: argparse.Namespace, n: int) -> torch.Tensor:
    return torch.randn(n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))


def markdown(rows: list[dict]) -> str:
    """Rows (dicts sharing keys, in order of first appearance) as a Markdown table."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


SECTIONS = {"core": section_core, "backbones": section_backbones, "engines": section_engines}


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print a Markdown table for each, and optionally write all rows as JSON."""
    args = get_args_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for section in args.section or list(SECTIONS):
        results[section] = SECTIONS[section](args)
        print(f"\n## {section} ({args.size}x{args.size}, {args.threads} threads)\n\n{markdown(results[section])}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), **results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
