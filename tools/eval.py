"""Evaluate a checkpoint on a VOC-format split, or score saved prediction masks (--pred-dir) like the VOC devkit."""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import math
import sys
from typing import Sequence

from datasets import VOCSegmentation, build_eval_transform, load_class_names
from datasets.image_files import IGNORE_INDEX
from deeplab.checkpoint import load_checkpoint, match_class_names
from deeplab.engine.data import build_val_loader
from deeplab.errors import UserError, report_user_errors
from deeplab.evaluation import (ConfusionMatrix, evaluate, format_scores, report_paths, score_prediction_dir,
                                 warn_repeated_ids, write_report)
from deeplab.inference import ENGINES, Predictor
from deeplab.tool_args import check_file_name, check_new_files

from _image_flags import add_view_flags

#: Largest test scale: DeepLab's multi-scale evaluation goes up to 1.75, and each side's factor costs its square.
MAX_SCALE = 4.0
#: Flags that change how a model predicts; saved masks (--pred-dir) were predicted already.
MODEL_FLAGS = ("scales", "flip", "any_orientation", "engine", "output_stride")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint to evaluate (the model is rebuilt from it alone)")
    source.add_argument("--pred-dir", help="folder of predicted masks to score: predict.py's output folder "
                        "(<id>_mask.png) or the VOC devkit's <id>.png (palette or grey class ids)")
    parser.add_argument("--data-root", required=True, help="folder that holds VOCdevkit/VOC2012 (and classes.txt)")
    parser.add_argument("--split", default="val",
                        help="split to score (ImageSets/Segmentation/<split>.txt; default val)")
    parser.add_argument("--json", help="write scores here, and beside it the confusion matrix (.csv and .png) and a "
                        "per-class bar chart; existing files are refused unless --overwrite; - or /dev/stdout: the "
                        "JSON alone, after the table")
    parser.add_argument("--overwrite", action="store_true", help="replace the --json report files if they exist")
    parser.add_argument("--scales", default="1.0",
                        help="comma-separated test scales, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (at most 4; default 1.0)")
    add_view_flags(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="default auto: CUDA when available")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (see deeplab.inference; default auto: the fastest verified to keep the "
                        "checkpoint's answer on its validation images, checked once and cached); int8 calibrates on "
                        "the checkpoint's training images, else on the split's")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="run the weights at this output stride (default: the checkpoint's; 8 is slower and finer)")
    parser.add_argument("--workers", type=int, default=2,
                        help="data-loading processes (default 2; 0: load in this one)")
    parser.add_argument("--ignore-class-names", action="store_true",
                        help="score although the checkpoint's classes differ from the data's (you say the ids agree)")
    return parser


def parse_scales(text: str) -> list[float]:
    """``"0.5,1.0"`` -> ``[0.5, 1.0]``; anything else, or a scale above :data:`MAX_SCALE`, is a user error."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        scales = []
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise UserError(f"--scales {text}: expected positive numbers separated by commas, e.g. 0.75,1.0,1.25")
    big = next((s for s in scales if s > MAX_SCALE), None)
    if big is not None:  # "1,25" meant as 1.25 would need 625 times the memory of scale 1
        raise UserError(f"--scales {text}: {big:g} enlarges each side {big:g} times ({big * big:g} times the pixels "
                        f"and memory); at most {MAX_SCALE:g} (a decimal takes a point: 1.25)")
    return scales


def refuse_model_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """UserError for a model flag beside --pred-dir: saved masks are scored as they are, so a --flip or --scales
    there would change nothing while the scores seemed to include it."""
    given = [f"--{name.replace('_', '-')}" for name in MODEL_FLAGS if getattr(args, name) != parser.get_default(name)]
    if given:
        raise UserError(f"{', '.join(given)}: only with --checkpoint; --pred-dir scores the saved masks as they are")


def score_checkpoint(args: argparse.Namespace) -> tuple[ConfusionMatrix, list[str], dict]:
    """Predict every image of the split at full resolution and accumulate one confusion matrix; also the settings
    the report records (the engine that ran, the output stride it ran at, scales, flip, any orientation)."""
    scales = parse_scales(args.scales)
    data_names = load_class_names(args.data_root)
    dataset = VOCSegmentation(args.data_root, split=args.split, class_names=data_names)  # a missing split first
    warn_repeated_ids(dataset.ids, split=args.split)
    class_names = match_class_names(args.checkpoint, load_checkpoint(args.checkpoint), data_names,
                                    data_root=args.data_root, allow_mismatch=args.ignore_class_names)
    # int8 calibrates on the checkpoint's training images when they are here, else on this split's.
    split_images = [dataset.image_path(i) for i in range(len(dataset))]
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, engine=args.engine,
                                          fallback_calibration=split_images, output_stride=args.output_stride)
    if predictor.engine_choice:
        print(predictor.engine_choice)
    dataset.transform = build_eval_transform(mean=predictor.mean, std=predictor.std)
    loader = build_val_loader(dataset, batch_size=1, workers=args.workers)
    stride = f", output stride {args.output_stride}" if args.output_stride else ""
    print(f"evaluating {args.checkpoint} on {len(dataset)} {args.split} images "
          f"({predictor.device}, scales {scales}{_views(args)}{stride})")
    matrix = evaluate(predictor.engine, loader, num_classes=len(class_names), scales=scales, flip=args.flip,
                      any_orientation=args.any_orientation,
                      min_side=predictor.min_side, image_paths=split_images)
    return matrix, class_names, {"scales": scales, "flip": args.flip, "any_orientation": args.any_orientation,
                                 "engine": predictor.engine_name,
                                 "output_stride": predictor.model_config.get("output_stride")}


def _views(args: argparse.Namespace) -> str:
    """The averaged views in words, for the line announcing the evaluation."""
    if args.any_orientation:
        return ", every mirror and quarter turn"
    return ", flip" if args.flip else ""


def score_predictions(args: argparse.Namespace) -> tuple[ConfusionMatrix, list[str], dict]:
    """Score the saved masks in ``--pred-dir`` against the split's ground truth (no settings of a model to report)."""
    dataset = VOCSegmentation(args.data_root, split=args.split)
    warn_repeated_ids(dataset.ids, split=args.split)
    return score_prediction_dir(dataset, args.pred_dir), dataset.class_names, {}


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Score the checkpoint or prediction folder, print the table and write the report when --json is given."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.pred_dir:
        refuse_model_flags(args, parser)
    if args.json == "-":  # the usual name for standard output, not a file called '-'
        args.json = "/dev/stdout"
    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be 0 (load in this process) or more")
    if args.json:
        check_file_name(args.json, flag="--json")  # before it becomes a Path, which drops a trailing slash
        check_new_files(report_paths(args.json).values(), flag="--json", overwrite=args.overwrite,
                        inputs=[("--checkpoint", args.checkpoint)] if args.checkpoint else [])
    matrix, class_names, settings = score_checkpoint(args) if args.checkpoint else score_predictions(args)
    if not matrix.matrix.sum():
        raise UserError(f"{args.split} of {args.data_root}: every ground-truth pixel is void ({IGNORE_INDEX}); "
                        "nothing to score")
    scores = matrix.scores(class_names)
    try:
        print(format_scores(scores))
    finally:  # the report is written even when the reader of the table went away (`eval.py ... | head`)
        if args.json:
            paths = write_report(args.json, scores, matrix.matrix, class_names, split=args.split,
                                 source=args.checkpoint or args.pred_dir, **settings)
    if args.json:
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
