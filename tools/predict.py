"""Segment images with a trained checkpoint: a palette PNG of class ids and a colour overlay with legend per image."""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np

from datasets import DataError, find_images, read_rgb
from deeplab.checkpoint import check_writable, newest_checkpoint
from deeplab.errors import UserError, report_user_errors
from deeplab.inference import ENGINES, Predictor
from deeplab.inference.outputs import PredictionWriter, free_output_folder, split_earlier_predictions


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--checkpoint", help="checkpoint to use (default: the newest runs/**/best.pt)")
    parser.add_argument("--out", help="output folder (default predictions, or predictions-2, -3... where files "
                        "would be replaced); files there are never replaced unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace files of the same names in --out")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the colour mask in the overlay, 0..1")
    parser.add_argument("--max-size", type=int, default=1024,
                        help="shrink images whose long side is larger before segmenting (0: never)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (see deeplab.inference); int8 calibrates on the first inputs")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="run the weights at this output stride (default: the checkpoint's; 8 is slower and finer)")
    return parser


def readable(paths: Sequence[Path]) -> Iterator[np.ndarray]:
    """The decodable images among ``paths``, lazily (int8 calibration reads the first few)."""
    for path in paths:
        try:
            yield read_rgb(path)
        except DataError:
            continue  # reported when the image's turn comes


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Segment every input; a bad image is reported and skipped, and the exit status 1 says so."""
    args = get_args_parser().parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must lie between 0 and 1")
    if args.max_size < 0:
        raise UserError(f"--max-size {args.max_size}: must be a number of pixels, or 0 to never shrink")
    images, problems = find_images(args.inputs)
    images, earlier = split_earlier_predictions(images)
    if earlier:
        print(f"skipping {len(earlier)} masks and overlays that predict.py wrote before (never taken as inputs)")
    writer = PredictionWriter(args.out or free_output_folder("predictions", images), images, overwrite=args.overwrite)
    writer.check()
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = newest_checkpoint()
        print(f"using the newest checkpoint under runs/: {checkpoint}")
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device, engine=args.engine,
                                          max_size=args.max_size or None, calibration=readable(images),
                                          output_stride=args.output_stride)
    check_writable(writer.folder)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    done = 0
    for path in writer.inputs:
        try:
            image = read_rgb(path)
        except DataError as exc:
            print(f"error: {exc} (skipped)", file=sys.stderr)
            continue
        prediction = predictor.predict(image)
        # Write failures propagate: the output folder is broken and every further image would fail alike.
        mask_path, overlay_path = writer.save(path, image, prediction.mask, class_names=predictor.class_names,
                                              alpha=args.alpha)
        line = f"{path} -> {mask_path}, {overlay_path}"
        (height, width) = prediction.model_size
        if (height, width) != image.shape[:2]:
            line += (f" (resized {image.shape[1]}x{image.shape[0]} to {width}x{height} for the model, "
                     f"--max-size {args.max_size}; mask upsampled back to full size)")
        print(line)
        done += 1
    print(f"{done} of {len(writer.inputs)} images segmented; results in {writer.folder}")
    return 0 if done == len(writer.inputs) and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
