"""Segment images with a trained checkpoint: a palette PNG of class ids and a colour overlay with legend per image."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # our `datasets`, not Hugging Face's

import argparse  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from PIL import Image  # noqa: E402

from datasets import build_eval_transform  # noqa: E402
from datasets.voc import save_label_png  # noqa: E402
from deeplab.checkpoint import check_writable  # noqa: E402
from deeplab.errors import UserError, report_user_errors  # noqa: E402
from deeplab.evaluation import Segmenter, load_segmenter, segment_image, shrink_to  # noqa: E402
from deeplab.images import list_images, read_rgb  # noqa: E402
from deeplab.inference import ENGINES  # noqa: E402
from deeplab.visualize import overlay  # noqa: E402

RUNS = Path("runs")
CALIBRATION_IMAGES = 4  # int8 calibrates on this many of the inputs: enough for min/max ranges, quick to run


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", help="checkpoint to use (default: the newest runs/**/best.pt)")
    parser.add_argument("--out", default="predictions", help="output folder (created if needed)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the colour mask in the overlay, 0..1")
    parser.add_argument("--max-size", type=int, default=1024,
                        help="shrink images whose long side is larger before segmenting (0: never)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (see deeplab.inference); int8 calibrates on the first inputs")
    return parser


def default_checkpoint() -> Path:
    """The newest ``best.pt`` under ``./runs``, or a user error saying how to get one."""
    found = sorted(RUNS.rglob("best.pt"), key=lambda p: p.stat().st_mtime) if RUNS.is_dir() else []
    if not found:
        raise UserError(
            f"{RUNS.resolve()}: no best.pt found; train a model with tools/train.py or pass --checkpoint CKPT"
        )
    print(f"using the newest checkpoint under {RUNS}/: {found[-1]}")
    return found[-1]


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Image paths from files and folders, and one problem line per input that yields none."""
    images, problems = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = list_images(path)
            images += found
            if not found:
                problems.append(f"{path}: folder holds no images")
        elif path.exists():
            images.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    return images, problems


def calibration_from(paths: Sequence[Path], max_size: int | None) -> Callable:
    """``(mean, std) -> batches`` of the first readable inputs, as the model will see them, for int8 calibration."""

    def batches(mean: tuple[float, ...], std: tuple[float, ...]) -> list:
        transform, found = build_eval_transform(mean=mean, std=std), []
        for path in paths:
            if len(found) == CALIBRATION_IMAGES:
                break
            try:
                image = shrink_to(read_rgb(path), max_size)
            except UserError:
                continue  # reported when the image's turn comes
            found.append(transform(image, np.zeros(image.shape[:2], np.uint8))[0][None])
        return found

    return batches


def predict_one(
    path: Path, image: np.ndarray, segmenter: Segmenter, transform: Callable, args: argparse.Namespace
) -> str:
    """Segment one decoded image and write its mask and overlay; returns the line to print."""
    mask, (height, width) = segment_image(
        segmenter.predictor, image, transform=transform, max_size=args.max_size or None
    )
    out = Path(args.out)
    mask_path, overlay_path = out / f"{path.stem}_mask.png", out / f"{path.stem}_overlay.png"
    try:
        save_label_png(mask_path, mask)
        Image.fromarray(overlay(image, mask, alpha=args.alpha, class_names=segmenter.class_names)).save(overlay_path)
    except OSError as exc:
        raise UserError(f"{out}: cannot write results ({exc.strerror or exc})") from None
    line = f"{path} -> {mask_path}, {overlay_path}"
    if (height, width) != image.shape[:2]:
        line += (f" (resized {image.shape[1]}x{image.shape[0]} to {width}x{height} for the model, "
                 f"--max-size {args.max_size}; mask upsampled back to full size)")
    return line


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Segment every input; a bad image is reported and skipped, and the exit status 1 says so."""
    args = get_args_parser().parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must lie between 0 and 1")
    images, problems = expand_inputs(args.inputs)
    segmenter = load_segmenter(args.checkpoint or default_checkpoint(), device=args.device, engine=args.engine,
                               calibration=calibration_from(images, args.max_size or None))
    transform = build_eval_transform(mean=segmenter.mean, std=segmenter.std)
    check_writable(args.out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    done = 0
    for path in images:
        try:
            image = read_rgb(path)
        except UserError as exc:
            print(f"error: {exc} (skipped)", file=sys.stderr)
            continue
        # Write failures propagate: the output folder is broken and every further image would fail alike.
        print(predict_one(path, image, segmenter, transform, args))
        done += 1
    print(f"{done} of {len(images)} images segmented; results in {args.out}")
    return 0 if done == len(images) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
