"""Convert SBD's cls/*.mat labels to PNGs and write VOC's train_aug.txt (VOC train + SBD - VOC val).

Existing files that differ from what would be written (a curated train_aug.txt, other labels) are refused before
any is written, unless --overwrite; identical ones (a re-run) are kept as they are.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import sys
from pathlib import Path

import argparse
from typing import Sequence

from datasets.sbd import convert_sbd, plan_sbd
from deeplab.errors import report_user_errors
from deeplab.tool_args import check_new_files


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of this tool."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sbd-root", required=True, help="SBD's benchmark_RELEASE/dataset (cls/, img/, train.txt, val.txt)"
    )
    parser.add_argument("--data-root", required=True, help="folder that holds VOCdevkit/VOC2012")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing train_aug.txt or SegmentationClassAug PNG that differs")
    return parser


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run the conversion and print where train_aug.txt went and how many ids it lists."""
    args = get_args_parser().parse_args(argv)
    plan = plan_sbd(args.sbd_root, args.data_root)
    check_new_files(plan.replaced, flag="--data-root", overwrite=args.overwrite)
    out = convert_sbd(plan)
    count = len(out.read_text(encoding="utf-8").split())
    print(f"wrote {out} ({count} ids); train with --split train_aug")
    return 0


if __name__ == "__main__":
    sys.exit(main())
