"""Training throughput of our DeepLabV3+ against segmentation_models_pytorch's, and of our data pipeline.

    python tools/benchmark_train.py                 # 2 threads, crop 256, batch 8, fp32, 2 loader workers
    python tools/benchmark_train.py --data-root data/voc

Both models take the same SGD steps on the same random batches, timed alternately so background load hits
both alike; the data pipeline (decode, augment, collate in worker processes) must outpace the step by >= 2x.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from backbones import build_backbone
from datasets import VOCSegmentation, ensure_demo_dataset
from deeplab.benchmark import SMP_STRIDE, cpu_flags
from deeplab.benchmark.training import OURS, loader_images_per_second, train_step_rates
from deeplab.errors import UserError, report_user_errors
from deeplab.tool_args import check_ranges


def get_args_parser() -> argparse.ArgumentParser:
    """Benchmark settings."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--crop-size", type=int, default=256, help="square crop (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per model and round (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best round counts (default 2)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes (default 2)")
    p.add_argument("--loader-batches", type=int, default=30, help="batches timed from the loader (default 30)")
    p.add_argument("--data-root", help="VOC-format folder for the loader benchmark (default: the demo data, "
                   "generated in data/demo)")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before any timing, numbers no training step or loader can use."""
    check_ranges({"--threads": args.threads, "--crop-size": args.crop_size, "--steps": args.steps,
                  "--rounds": args.rounds, "--workers": args.workers, "--loader-batches": args.loader_batches},
                 at_least_one=["--threads", "--crop-size", "--steps", "--rounds", "--loader-batches"],
                 at_least_zero=["--workers"])
    if args.batch_size < 2:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 2; in training, the BatchNorm after "
                        "ASPP's image-level pooling needs more than one value per channel")
    if args.crop_size % SMP_STRIDE:
        raise UserError(f"--crop-size {args.crop_size}: must be a multiple of {SMP_STRIDE}, as smp's DeepLabV3Plus "
                        "needs")


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Print images/s of both models' training steps and of the data pipeline, then one JSON line."""
    args = get_args_parser().parse_args(argv)
    check_args(args)
    dataset = VOCSegmentation(args.data_root or ensure_demo_dataset("data/demo"), split="train")
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_flags()}")
    train_ips = train_step_rates(crop_size=args.crop_size, batch_size=args.batch_size, steps=args.steps,
                                 rounds=args.rounds)
    for name, ips in train_ips.items():
        print(f"train step  {name:34s} {ips:7.2f} images/s")
    backbone = build_backbone("mobilenetv2")
    load_ips = loader_images_per_second(dataset, mean=backbone.mean, std=backbone.std, crop_size=args.crop_size,
                                        batch_size=args.batch_size, workers=args.workers, batches=args.loader_batches)
    ours_ips = train_ips[OURS]
    verdict = "OK" if load_ips >= 2 * ours_ips else "TOO SLOW"
    print(f"data loader {args.workers} workers {'':24s} {load_ips:7.2f} images/s  "
          f"({load_ips / ours_ips:.1f}x our step's consumption; need >= 2x: {verdict})")
    print(json.dumps({"train_images_per_s": train_ips, "loader_images_per_s": load_ips,
                      "threads": args.threads, "crop_size": args.crop_size, "batch_size": args.batch_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
