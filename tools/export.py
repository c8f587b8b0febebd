"""Export a checkpoint to ONNX and check ONNX Runtime's logits against PyTorch's.

    python tools/export.py --checkpoint runs/demo/best.pt --format onnx --out model.onnx
    python tools/export.py --checkpoint best.pt --out model_512.onnx --input-size 512 512

Batch size is always dynamic; height and width are too unless --input-size fixes them.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # our `datasets`, not Hugging Face's

import argparse  # noqa: E402
from typing import Sequence  # noqa: E402

import torch  # noqa: E402

from deeplab.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from deeplab.errors import UserError, report_user_errors  # noqa: E402
from deeplab.export import export_onnx, onnx_session, parity_check  # noqa: E402

# Odd and unequal, unlike any export size, so a resize baked to one size would show up.
DYNAMIC_PARITY_SIZE = (97, 131)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint holding `model` and `model_config`")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    parser.add_argument("--out", required=True, help="file to write (e.g. model.onnx)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="fix height and width")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random parity-check input")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Export, then print the parity of ONNX Runtime against PyTorch on one random input."""
    args = get_args_parser().parse_args(argv)
    if args.input_size is not None and min(args.input_size) < 1:
        raise UserError(f"--input-size: height and width must be positive, got {args.input_size}")
    model = model_from_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint).eval()
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, out, input_size=args.input_size)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the ONNX file ({exc.strerror or exc})") from None
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {_shape_text(args.input_size)})")
    height, width = args.input_size or DYNAMIC_PARITY_SIZE
    batch = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(args.seed))
    print(parity_check(model, onnx_session(out), batch))
    return 0


def _shape_text(input_size: Sequence[int] | None) -> str:
    if input_size is None:
        return "input N x 3 x H x W, all dynamic"
    return f"input N x 3 x {input_size[0]} x {input_size[1]}, batch dynamic"


if __name__ == "__main__":
    sys.exit(main())
