"""Benchmark our DeepLabV3+ against segmentation_models_pytorch and torchvision, in one run, on this CPU.

    python tools/benchmark.py --section core        # ours (separable / not) vs smp mobilenet_v2: params, GMACs, latency
    python tools/benchmark.py --section backbones   # every registered backbone at OS16 and OS8 (+ smp twins)
    python tools/benchmark.py --section engines --checkpoint demo/best.pt --checkpoint voc/best.pt --rounds 3
    python tools/benchmark.py --section predict --repeats 5 --warmup 1   # folder img/s, loop vs pipeline; video fps
    python tools/benchmark.py --section core --json core.json

Latency: batch 1, fp32 unless the engine says otherwise, channels_last for eager models, warm-up calls,
then the median of ``--repeats`` calls; candidates run round-robin so load from other processes hits all
of them alike. Ratios are to smp's DeepLabV3Plus(mobilenet_v2) measured in the same run.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import sys
from typing import Sequence

import torch

from deeplab.benchmark import SMP_STRIDE, cpu_flags, markdown, write_json
from deeplab.benchmark.backbones import backbone_rows, check_backbone_names
from deeplab.benchmark.core import core_rows
from deeplab.benchmark.engines import engine_rows, load_trained
from deeplab.benchmark.prediction import prediction_rows
from deeplab.checkpoint import load_checkpoint
from deeplab.errors import UserError, memory_failures_as, report_user_errors
from deeplab.inference import ENGINES, resolve_engine
from deeplab.tool_args import check_new_files, check_ranges, report_stream

SECTIONS = ("core", "backbones", "engines", "predict")
#: Sections that time smp's DeepLabV3Plus beside ours (it needs sides that SMP_STRIDE divides).
SMP_SECTIONS = ("core", "backbones", "engines")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=SECTIONS, action="append",
                        help="what to measure (repeatable; default: all)")
    parser.add_argument("--size", type=int, default=512, help="input height and width (default 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate (default 2)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls per candidate, median reported (default 10)")
    parser.add_argument("--backbones", nargs="+", help="backbones section: these only (default: all registered)")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="backbones: report its best_miou beside its (backbone, OS); engines: trained model "
                             "(repeatable; the first is timed, each one's agreement and mIoU are measured); "
                             "predict: the first one's model is timed (default a random-weight mobilenetv2)")
    parser.add_argument("--data-root", action="append", default=[],
                        help="engines: VOC-format folder whose val split scores the checkpoint in the same position "
                             "(default: the data root the checkpoint was trained on)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="engines: interleaved timing rounds; the spread of their medians is reported (default 3)")
    parser.add_argument("--images", type=int, default=100,
                        help="predict: photos in the folder, VOC-sized (default 100)")
    parser.add_argument("--frames", type=int, default=50,
                        help="predict: frames of the --size x --size clip (default 50)")
    parser.add_argument("--engine", choices=ENGINES, default="auto", help="predict: inference engine (default auto)")
    parser.add_argument("--ignore-class-names", action="store_true",
                        help="engines: score although a checkpoint's classes differ from its data's (you say the ids "
                             "agree)")
    parser.add_argument("--json", help="also write every row to this JSON file (a new file unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser


def check_args(args: argparse.Namespace, sections: Sequence[str]) -> None:
    """Refuse, before any timing, numbers no section can use, an engine or backbone name this machine has not, a
    checkpoint that cannot be read and a --json file that exists or cannot be written."""
    check_ranges({"--size": args.size, "--threads": args.threads, "--warmup": args.warmup, "--repeats": args.repeats,
                  "--rounds": args.rounds, "--images": args.images, "--frames": args.frames},
                 at_least_one=["--size", "--threads", "--repeats", "--rounds", "--images", "--frames"],
                 at_least_zero=["--warmup"])
    smp_sections = [section for section in sections if section in SMP_SECTIONS]
    if smp_sections and args.size % SMP_STRIDE:
        raise UserError(f"--size {args.size}: the {'/'.join(smp_sections)} section times smp's DeepLabV3Plus, "
                        f"which needs a multiple of {SMP_STRIDE}")
    if len(args.data_root) > len(args.checkpoint):  # each scores the checkpoint in its position; one would go unused
        raise UserError(f"--data-root {args.data_root[len(args.checkpoint)]}: {len(args.data_root)} --data-root for "
                        f"{len(args.checkpoint)} --checkpoint; each names the data of the checkpoint in its position")
    if "predict" in sections:
        if args.size < 2:
            raise UserError(f"--size {args.size}: the predict section's MPEG-4 clip needs at least 2x2 pixels")
        try:
            resolve_engine(args.engine, "cpu")  # installed, and native bf16 for the bf16 engines
        except ValueError as exc:
            raise UserError(f"--engine {args.engine}: {exc}") from None
    if args.json:
        check_new_files([args.json], flag="--json", overwrite=args.overwrite,
                        inputs=[("--checkpoint", checkpoint) for checkpoint in args.checkpoint])
    if "backbones" in sections and args.backbones:
        check_backbone_names(args.backbones)
    for checkpoint in args.checkpoint:  # a missing or foreign file, before a section that reads it late
        load_checkpoint(checkpoint)


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print a Markdown table for each, and optionally write all rows as JSON."""
    args = get_args_parser().parse_args(argv)
    chosen = list(dict.fromkeys(args.section or SECTIONS))
    check_args(args, chosen)
    # Checkpoints and their data are checked (class names included) before any section times anything.
    trained = (load_trained(args.checkpoint, args.data_root, ignore_class_names=args.ignore_class_names)
               if "engines" in chosen else [])
    torch.set_num_threads(args.threads)
    timing = {"size": args.size, "warmup": args.warmup, "repeats": args.repeats}
    sections = {
        "core": lambda: core_rows(**timing),
        "backbones": lambda: backbone_rows(**timing, names=args.backbones, checkpoints=args.checkpoint),
        "engines": lambda: engine_rows(**timing, threads=args.threads, trained=trained, rounds=args.rounds),
        "predict": lambda: prediction_rows(**timing, checkpoints=args.checkpoint, engine=args.engine,
                                           images=args.images, frames=args.frames),
    }
    flags = cpu_flags()
    report = report_stream(args.json) if args.json else sys.stdout
    print(f"CPU: {flags}", file=report)
    results = {}
    for section in chosen:
        with memory_failures_as(f"--size {args.size}: the {section} section does not fit in memory{{failed}}; "
                                "choose a smaller size"):
            results[section] = sections[section]()
        print(f"\n## {section} ({args.size}x{args.size}, {args.threads} threads)\n\n{markdown(results[section])}",
              file=report, flush=True)
    if args.json:
        write_json(args.json, {"cpu": flags, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
