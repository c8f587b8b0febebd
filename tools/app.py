"""A local web app for a trained checkpoint: drop an image, see the overlay with its legend, the share of pixels
per class and the palette mask to download; a tab segments short clips. Needs Gradio: pip install -e ".[app]".

    python tools/app.py --checkpoint runs/demo_mobilenetv2_os16/best.pt      # then open http://127.0.0.1:7860
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import sys
from typing import Sequence

from deeplab.checkpoint import newest_checkpoint
from deeplab.errors import UserError, interrupt_on_signals, report_user_errors
from deeplab.inference import ENGINES, Predictor
from deeplab.tool_args import check_bindable, check_ranges

from _image_flags import add_image_flags, calibration_images, check_image_flags

#: The largest --max-upload-mb (a terabyte): Gradio counts the limit in bytes in a 64-bit integer.
MAX_UPLOAD_MB = 1_000_000


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint to serve (default: the newest runs/**/best.pt)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 shares it on the network)")
    parser.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    add_image_flags(parser, alpha_help="initial opacity of the class colours, 0..1",
                    calibration_default="the checkpoint's training images, when they are on this machine")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="run the weights at this output stride (default: the checkpoint's)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="default auto: CUDA when available")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference engine (default auto; see tools/predict.py); int8 ones calibrate once, cached")
    parser.add_argument("--max-upload-mb", type=int, default=20,
                        help=f"largest upload accepted (default 20 MB, at most {MAX_UPLOAD_MB})")
    parser.add_argument("--max-video-frames", type=int, default=300,
                        help="longest clip the video tab takes (default 300 frames; audio is not kept)")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Load the checkpoint once, then serve the app until interrupted."""
    args = get_args_parser().parse_args(argv)
    check_image_flags(args)
    check_ranges({"--max-upload-mb": args.max_upload_mb, "--max-video-frames": args.max_video_frames},
                 at_least_one=["--max-upload-mb", "--max-video-frames"])
    if args.max_upload_mb > MAX_UPLOAD_MB:
        raise UserError(f"--max-upload-mb: must be at most {MAX_UPLOAD_MB}, got {args.max_upload_mb}")
    check_bindable(args.host, args.port)
    try:
        from deeplab.app.web import AppLimits, build_app, launch
    except ImportError as exc:
        raise UserError(f"the web app needs Gradio ({exc}): pip install -e \".[app]\"") from None
    checkpoint = args.checkpoint or newest_checkpoint()
    # kill, docker stop and systemctl stop end the app as Ctrl-C does, so its result files go too.
    with interrupt_on_signals():
        predictor = Predictor.from_checkpoint(checkpoint, device=args.device, engine=args.engine,
                                              max_size=args.max_size or None, output_stride=args.output_stride,
                                              calibration=calibration_images(args),
                                              flip=args.flip, any_orientation=args.any_orientation)
        if predictor.engine_choice:
            print(predictor.engine_choice)
        limits = AppLimits(max_upload_mb=args.max_upload_mb, max_video_frames=args.max_video_frames)
        app = build_app(predictor, checkpoint=checkpoint, alpha=args.alpha, limits=limits)
        print(f"serving {checkpoint} ({predictor.engine_name}); audio of clips is not kept; results are kept "
              f"{limits.keep_results_s / 3600:g} h; Ctrl-C stops", flush=True)
        launch(app, host=args.host, port=args.port, limits=limits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
