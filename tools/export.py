"""Export a checkpoint to ONNX and check ONNX Runtime's logits against PyTorch's.

    python tools/export.py --checkpoint runs/demo/best.pt --format onnx --out model.onnx
    python tools/export.py --checkpoint best.pt --out model_512.onnx --input-size 512 512

Batch size is always dynamic; height and width are too unless --input-size fixes them. An existing --out is
replaced only with --overwrite, and never when it is the checkpoint itself. With --out /dev/stdout the model goes to
standard output and this report to standard error.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import stat
import sys
from pathlib import Path
from typing import Sequence

from deeplab.errors import report_user_errors
from deeplab.inference.export import export_checkpoint
from deeplab.tool_args import check_new_files, check_seed, report_stream


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint holding `model` and `model_config`")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default onnx)")
    parser.add_argument("--out", required=True, help="file to write (e.g. model.onnx; refused if it exists, unless "
                        "--overwrite)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="fix height and width")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random parity-check input")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="run the weights at this output stride (default: the checkpoint's; 8 is slower and finer)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Export, then print the parity of ONNX Runtime against PyTorch on one random input."""
    args = get_args_parser().parse_args(argv)
    check_seed(args.seed)
    check_new_files([args.out], flag="--out", overwrite=args.overwrite, inputs=[("--checkpoint", args.checkpoint)])
    parity, metadata = export_checkpoint(args.checkpoint, args.out, input_size=args.input_size, seed=args.seed,
                                         output_stride=args.output_stride)
    out = Path(args.out)
    shape = ("input N x 3 x H x W, all dynamic" if args.input_size is None
             else f"input N x 3 x {args.input_size[0]} x {args.input_size[1]}, batch dynamic")
    report = report_stream(out)
    written = out.stat()
    size = f"{written.st_size / 2**20:.1f} MiB, " if stat.S_ISREG(written.st_mode) else ""  # a pipe or device has none
    print(f"wrote {out} ({size}{shape})", file=report)
    print(f"input: RGB / 255, then (x - mean) / std with mean {metadata['mean']} and std {metadata['std']} (stored in "
          "the file's metadata with the class names)", file=report)
    print(parity, file=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
