"""Training throughput of our DeepLabV3+ against segmentation_models_pytorch's, and of our data pipeline.

    python tools/benchmark_train.py                 # 2 threads, crop 256, batch 8, fp32, 2 loader workers

Both models take the same SGD steps on the same random batches, timed alternately so background load hits
both alike; the data pipeline (decode, augment, collate in worker processes) must outpace the step by >= 2x.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # our `datasets`, not Hugging Face's

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from datasets import VOCSegmentation, build_train_transform  # noqa: E402
from deeplab import training  # noqa: E402
from deeplab.errors import report_user_errors  # noqa: E402
from deeplab.model import build_model  # noqa: E402

VOC_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc_mini"


def get_args_parser() -> argparse.ArgumentParser:
    """Benchmark settings; the defaults are the ones the issue asks to report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model and round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best round counts")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes")
    p.add_argument("--loader-batches", type=int, default=30, help="batches timed from the loader")
    p.add_argument("--data-root", default=str(VOC_MINI), help="VOC-format folder for the loader benchmark")
    return p


def step_seconds(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, steps: int) -> float:
    """Mean wall time of one forward + backward + SGD step (after one untimed warm-up step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()
        loss = training.segmentation_loss(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def loader_images_per_second(
    root: str, *, mean: Sequence[float], std: Sequence[float], crop_size: int, batch_size: int, workers: int,
    batches: int,
) -> float:
    """Images/s our training loader delivers once its workers are up (the first batch is not timed)."""
    dataset = VOCSegmentation(root, split="train")
    loader = training.build_train_loader(
        dataset, transform=build_train_transform(crop_size=crop_size, mean=mean, std=std),
        batch_size=batch_size, workers=workers, seed=0)
    iterator = iter(loader)
    next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Print images/s of both models' training steps and of the data pipeline, then one JSON line."""
    args = get_args_parser().parse_args(argv)
    import segmentation_models_pytorch as smp  # deferred: only this benchmark needs it

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = build_model(backbone="mobilenetv2", num_classes=21, output_stride=16)
    models = {
        "ours (mobilenetv2, OS16)": ours,
        "smp DeepLabV3Plus(mobilenet_v2)": smp.DeepLabV3Plus(encoder_name="mobilenet_v2", encoder_weights=None,
                                                            classes=21),
    }
    images = torch.randn(args.batch_size, 3, args.crop_size, args.crop_size)
    masks = torch.randint(0, 21, (args.batch_size, args.crop_size, args.crop_size))
    best = {name: float("inf") for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            best[name] = min(best[name], step_seconds(model, images, masks, steps=args.steps))
    train_ips = {name: args.batch_size / seconds for name, seconds in best.items()}
    for name, ips in train_ips.items():
        print(f"train step  {name:34s} {ips:7.2f} images/s  ({best[name]:.2f} s/step)")
    load_ips = loader_images_per_second(args.data_root, mean=ours.mean, std=ours.std, crop_size=args.crop_size,
                                        batch_size=args.batch_size, workers=args.workers, batches=args.loader_batches)
    ours_ips = train_ips["ours (mobilenetv2, OS16)"]
    verdict = "OK" if load_ips >= 2 * ours_ips else "TOO SLOW"
    print(f"data loader {args.workers} workers {'':24s} {load_ips:7.2f} images/s  "
          f"({load_ips / ours_ips:.1f}x our step's consumption; need >= 2x: {verdict})")
    print(json.dumps({"train_images_per_s": train_ips, "loader_images_per_s": load_ips,
                      "threads": args.threads, "crop_size": args.crop_size, "batch_size": args.batch_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
