"""Segment images with a trained checkpoint: a palette PNG of class ids and a colour overlay with legend per image."""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import os
import sys
from typing import Sequence

from datasets import DataError, find_images, read_rgb
from deeplab.checkpoint import check_writable, newest_checkpoint
from deeplab.errors import UserError, report_user_errors
from deeplab.inference import ENGINES, Predictor
from deeplab.inference.outputs import save_prediction


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
                        help="inference engine and precision (see deeplab.inference.engines; auto: the fastest that "
                             "keeps >= 99.5%% of pixels equal to fp32 on this machine); prepared engines are cached "
                             "beside the checkpoint")
    parser.add_argument("--calibration", metavar="DIR",
                        help="int8 engines: calibrate on the images in DIR (default: the checkpoint's training "
                             "images when they are on this machine, else the inputs)")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Segment every input; a bad image is reported and skipped, and the exit status 1 says so."""
    args = get_args_parser().parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha {args.alpha}: must lie between 0 and 1")
    images, problems = find_images(args.inputs)
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = newest_checkpoint()
        print(f"using the newest checkpoint under runs/: {checkpoint}")
    calibration = None
    if args.calibration:
        calibration, missing = find_images([args.calibration])
        if missing:
            raise UserError(f"--calibration: {missing[0]}")
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device, engine=args.engine,
                                          max_size=args.max_size or None, calibration=calibration,
                                          fallback_calibration=images)
    out = check_writable(args.out)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    done = 0
    for path in images:
        try:
            image = read_rgb(path)
        except DataError as exc:
            print(f"error: {exc} (skipped)", file=sys.stderr)
            continue
        prediction = predictor.predict(image)
        # Write failures propagate: the output folder is broken and every further image would fail alike.
        mask_path, overlay_path = save_prediction(out, path.stem, image, prediction.mask,
                                                  class_names=predictor.class_names, alpha=args.alpha)
        line = f"{path} -> {mask_path}, {overlay_path}"
        (height, width) = prediction.model_size
        if (height, width) != image.shape[:2]:
            line += (f" (resized {image.shape[1]}x{image.shape[0]} to {width}x{height} for the model, "
                     f"--max-size {args.max_size}; mask upsampled back to full size)")
        print(line)
        done += 1
    print(f"{done} of {len(images)} images segmented; results in {args.out}")
    return 0 if done == len(images) and not problems else 1


if __name__ == "__main__":
    status = main()
    # Every file is written and closed by now: skip the interpreter's teardown of torch's modules, which takes
    # about a third as long as importing them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
