"""Convert a published DeepLabV3+ MobileNetV2 checkpoint into one of this project's, for eval, predict, export
and fine-tuning.

    python tools/import_checkpoint.py best_deeplabv3plus_mobilenet_voc_os16.pth --out vainf_voc.pt
    python tools/import_checkpoint.py deeplab_mobilenetv2.pth --out bubbliiiing_voc.pt
    python tools/import_checkpoint.py my_model.pth --out mine.pt --from bubbliiiing --classes classes.txt

Supported: VainF/DeepLabV3Plus-Pytorch `deeplabv3plus_mobilenet` and bubbliiiing/deeplabv3-plus-pytorch
`DeepLab(backbone="mobilenet")`, recognised from the tensors' names. The file is read without running code.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import shlex
import sys
from typing import Sequence

from datasets import DataError, read_class_names
from deeplab.converters import PROJECTS, ImportedCheckpoint, import_checkpoint, write_checkpoint
from deeplab.errors import UserError, report_user_errors
from deeplab.tool_args import check_new_files


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the downloaded checkpoint (.pth)")
    parser.add_argument("--out", required=True, help="checkpoint to write (refused if it exists, unless --overwrite)")
    parser.add_argument("--from", dest="source", choices=sorted(PROJECTS),
                        help="the project that wrote the file (default: recognised from its contents)")
    parser.add_argument("--classes", metavar="TXT", help="class names, one per line (default: VOC's 21, "
                        "Cityscapes' 19, else numbers)")
    parser.add_argument("--num-classes", type=int, help="check the file predicts this many classes")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), default=16,
                        help="output stride stored in the checkpoint (default 16; eval/predict can change it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def describe(imported: ImportedCheckpoint, file: str, out: str) -> list[str]:
    """What was found and written, and the commands that use it (the path quoted where the shell would split it)."""
    config, names = imported.model_config, imported.class_names
    quoted = shlex.quote(out)
    rates = "/".join(str(r) for r in config["atrous_rates"])
    shown = ", ".join(names) if len(names) <= 21 else ", ".join(names[:20]) + ", ..."
    return [
        f"found: {imported.project.title} {imported.project.architecture} in {file}",
        f"classes: {len(names)}, {imported.class_source}: {shown}",
        f"output stride: {config['output_stride']} (ASPP rates {rates}); the same weights run at the other stride "
        "with --output-stride 8 or 16 on eval.py, predict.py, export.py and train.py",
        f"input: RGB / 255, then mean {config['mean']} and std {config['std']} (stored in the checkpoint)",
        f"its project reports: {imported.project.reported}",
        f"wrote {out}",
        "use it:",
        f"  python tools/eval.py --checkpoint {quoted} --data-root data/voc",
        f"  python tools/predict.py photo.jpg --checkpoint {quoted}",
        f"  python tools/export.py --checkpoint {quoted} --out model.onnx",
        f"  python tools/train.py --init-from {quoted} --dataset voc --data-root my_data --iters 2000 --lr 0.001",
    ]


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Import, write, and say how to use the result; exit status 2 with one line on bad input."""
    args = get_args_parser().parse_args(argv)
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes {args.num_classes}: must be at least 1")
    # Before the work, not after it; the imported file itself is never replaced.
    check_new_files([args.out], flag="--out", overwrite=args.overwrite, inputs=[("imported", args.file)])
    try:
        names = read_class_names(args.classes) if args.classes else None
    except DataError as exc:
        raise UserError(f"--classes {exc}") from None
    imported = import_checkpoint(args.file, source=args.source, class_names=names, num_classes=args.num_classes,
                                 output_stride=args.output_stride)
    write_checkpoint(imported, args.out, overwrite=args.overwrite)
    print("\n".join(describe(imported, args.file, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
