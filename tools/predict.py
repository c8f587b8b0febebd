"""Segment images and videos with a trained checkpoint: per image a palette PNG of class ids and a colour overlay
with legend; per video (.mp4 .avi .mov .mkv) an overlay video <stem>_overlay.mp4 of the same size (odd sides padded
by one pixel, as mp4 requires) and frame rate (audio is not kept) and, with --save-masks, each frame's palette mask
in <stem>_masks/."""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from datasets import find_images
from datasets.image_files import IMAGE_SUFFIXES
from deeplab.checkpoint import newest_checkpoint
from deeplab.errors import UserError, report_user_errors
from deeplab.inference import ENGINES, Predictor
from deeplab.inference.outputs import PredictionWriter, free_output_folder, split_earlier_predictions
from deeplab.inference.pipeline import segment_files
from deeplab.inference.video import VIDEO_SUFFIXES, VideoError, probe_video, segment_video, split_videos
from deeplab.tool_args import check_writable

from _image_flags import add_image_flags, calibration_images, check_image_flags


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inputs", nargs="+", help="image and video files, folders of them, or quoted patterns "
                        "('photos/*.jpg') (videos: .mp4 .avi .mov .mkv; audio is not kept)")
    parser.add_argument("--checkpoint", help="checkpoint to use (default: the newest runs/**/best.pt)")
    parser.add_argument("--out", help="output folder (default predictions, or predictions-2, -3... where files "
                        "would be replaced); files there are never replaced unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace files of the same names in --out")
    add_image_flags(parser, alpha_help="weight of the colour mask in the overlay, 0..1",
                    calibration_default="the checkpoint's training images when they are on this machine, else the "
                                        "input images")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="default auto: CUDA when available")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine and precision (see deeplab.inference.engines; default auto: the "
                             "fastest that keeps >= 99.5%% of the checkpoint's validation pixels equal to fp32, checked "
                             "once per machine); prepared engines and auto's choice are cached beside the checkpoint")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="run the weights at this output stride (default: the checkpoint's; 8 is slower and finer)")
    parser.add_argument("--batch-size", type=int,
                        help="images of one size per engine call (default: chosen for the engine: 8 on a GPU, "
                             "4 for int8, else 1)")
    parser.add_argument("--save-masks", action="store_true",
                        help="videos: also write each frame's palette mask as <stem>_masks/000001.png ... "
                        "(with --overwrite, frame masks of an earlier run beyond this video's are removed)")
    parser.add_argument("--verbose", action="store_true", help="a line per image instead of a progress bar")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Segment every input; a bad image or video is reported and skipped, and the exit status 1 says so."""
    args = get_args_parser().parse_args(argv)
    check_image_flags(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    check_out_is_a_folder(args.out)
    found, problems = find_images(args.inputs, video_suffixes=VIDEO_SUFFIXES)
    found, earlier = split_earlier_predictions(found)
    if earlier:
        print(f"skipping {len(earlier)} masks and overlays that predict.py wrote before (never taken as inputs)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not found:  # no model to load and no folder to make
        print("nothing to segment")
        return 1 if problems else 0
    images, videos = split_videos(found)
    out = args.out or free_output_folder("predictions", images, videos=videos, save_masks=args.save_masks)
    writer = PredictionWriter(out, images, videos=videos, save_masks=args.save_masks, overwrite=args.overwrite)
    writer.check()
    check_writable(writer.folder, create=False)  # before the model, whose engine may take long to prepare
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = newest_checkpoint()
        print(f"using the newest checkpoint under runs/: {checkpoint}")
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device, engine=args.engine,
                                          max_size=args.max_size or None, calibration=calibration_images(args),
                                          fallback_calibration=images, output_stride=args.output_stride,
                                          flip=args.flip, any_orientation=args.any_orientation)
    if predictor.engine_choice:
        print(predictor.engine_choice)
    check_writable(writer.folder)
    batch_size = args.batch_size or predictor.batch_size
    done = segment_images(predictor, writer, args, batch_size) if writer.images else 0
    done_videos = sum(segment_one_video(predictor, path, writer, args, batch_size) for path in writer.videos)
    counts = [f"{done} of {len(writer.images)} images" if writer.images else "",
              f"{done_videos} of {len(writer.videos)} videos" if writer.videos else ""]
    print(f"{' and '.join(filter(None, counts))} segmented; results in {writer.folder}")
    return 0 if done == len(writer.images) and done_videos == len(writer.videos) and not problems else 1


def check_out_is_a_folder(out: str | None) -> None:
    """UserError for a new ``--out`` named like an image or video: it would become a folder of that name, which is
    not what whoever typed ``--out mask.png`` meant."""
    if out is not None and not Path(out).exists() and Path(out).suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES):
        raise UserError(f"--out {out}: names a file, but --out is the folder that masks (<name>_mask.png) and "
                        "overlays (<name>_overlay.png) are written into; give a folder")


def segment_images(predictor: Predictor, writer: PredictionWriter, args: argparse.Namespace, batch_size: int) -> int:
    """Segment the images (decoded and written on background threads); a bar, or a line each with --verbose."""
    def write(path: Path, image: np.ndarray, prediction) -> tuple[Path, Path]:
        # Write failures propagate: the output folder is broken and every further image would fail alike.
        return writer.save(path, image, prediction.mask, class_names=predictor.class_names, alpha=args.alpha)

    done = shrunk = 0
    with tqdm(total=len(writer.images), unit="img", disable=True if args.verbose else None) as bar:
        for result in segment_files(predictor, writer.images, write, batch_size=batch_size):
            bar.update()
            if result.error:
                tqdm.write(f"error: {result.error} (skipped)", file=sys.stderr)
                continue
            done += 1
            resized = result.prediction.model_size != result.image_size
            shrunk += resized
            if args.verbose:
                line = f"{result.key} -> {', '.join(map(str, result.written))}"
                if resized:
                    (height, width), (image_height, image_width) = result.prediction.model_size, result.image_size
                    line += (f" (resized {image_width}x{image_height} to {width}x{height} for the model, "
                             f"--max-size {args.max_size}; mask upsampled back to full size)")
                print(line)
    if shrunk and not args.verbose:
        print(f"shrunk for the model (long side over --max-size {args.max_size}): {shrunk} of {done} images; "
              "masks upsampled back to full size (--verbose names them)")
    return done


def segment_one_video(predictor: Predictor, path: Path, writer: PredictionWriter, args: argparse.Namespace,
                      batch_size: int) -> int:
    """Segment one video into ``<stem>_overlay.mp4`` (and masks); 1 if done, 0 after reporting why not."""
    overlay_path, masks_dir = writer.video_paths(path)
    try:
        info = probe_video(path)
        start = time.perf_counter()
        with tqdm(total=info.frames or None, desc=path.name, unit="frame", disable=None) as bar:
            result = segment_video(predictor, path, overlay_path, masks_dir=masks_dir, alpha=args.alpha,
                                   batch_size=batch_size, on_frame=bar.update, replace_masks=args.overwrite,
                                   exclusive=not args.overwrite)
    except VideoError as exc:
        print(f"error: {exc} (skipped)", file=sys.stderr)
        return 0
    speed = result.frames / (time.perf_counter() - start)
    masks = f" and {result.masks_dir}/" if result.masks_dir else ""
    print(f"{path} -> {result.overlay_path}{masks} ({result.frames} frames, {info.width}x{info.height} at "
          f"{info.fps:g} fps, {speed:.1f} frames/s; audio not kept)")
    return 1


if __name__ == "__main__":
    status = main()
    # Every file is written and closed by now: skip the interpreter's teardown of torch's modules, which takes
    # about a third as long as importing them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
