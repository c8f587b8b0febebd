"""Measure every imbalance option (losses, class weights, hard-pixel mining, class-balanced crops, copy-paste,
the rescaling range, the learning rate, every orientation) and their combinations on the ``demo-rare`` data: the
same budget (mobilenetv2 OS16 from scratch, 400 steps, batch 8, crop 128; lr 0.01 unless a row names another) and
the same seeds for every row; prints rare-class IoU and mIoU per row.

    python tools/benchmark_recipes.py --out /tmp/recipes                       # every row, seeds 0 and 1
    python tools/benchmark_recipes.py --out /tmp/recipes --rows ce "ce+3*dice, crops + ohem 0.1" --jobs 2
    python tools/benchmark_recipes.py --out /tmp/recipes --rows ce --flip   # also score as eval.py --flip
    python tools/benchmark_recipes.py --out /tmp/recipes --fresh /tmp/fresh  # also score on 300 fresh scenes

Runs live in --out (keep it outside the checkout); a finished run is read back, an interrupted one resumed.
Quality figures do not depend on machine load, only the time to get them does.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import sys
from collections.abc import Sequence

from deeplab.benchmark import markdown, write_json
from deeplab.benchmark.recipes import ROWS, recipe_table, run_study
from deeplab.errors import report_user_errors
from deeplab.tool_args import check_new_files, check_ranges

#: Suffix of the table's extra scores -> how their column is headed.
_EXTRA_COLUMNS = {"_flip": "--flip", "_turned": "--any-orientation", "_fresh": "fresh scenes",
                  "_fresh_flip": "fresh scenes --flip", "_fresh_turned": "fresh scenes --any-orientation"}


def get_args_parser() -> argparse.ArgumentParser:
    """Study settings."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the runs (outside the checkout)")
    p.add_argument("--data-root", default="data/demo_rare",
                   help="demo-rare data, generated there if missing (default data/demo_rare)")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW",
                   help=f"rows to run (default all): {'; '.join(ROWS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="training seeds; a repeated one runs once (default 0 1)")
    p.add_argument("--iters", type=int, help="override the 400-step budget (for a quick look only)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    p.add_argument("--flip", action="store_true",
                   help="also score each final model with mirrored inputs averaged in, as eval.py --flip")
    p.add_argument("--any-orientation", action="store_true",
                   help="also score each final model with its eight mirrors and quarter turns averaged, as eval.py "
                   "--any-orientation")
    p.add_argument("--fresh", metavar="DIR",
                   help="also score each final model on all 300 fresh demo-rare scenes in DIR (written there with "
                        "another generator seed if missing): about 80 rare objects that no run trained on and no "
                        "row was chosen on")
    p.add_argument("--json", help="also write the table here (a new file unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before any run, numbers no run can use and a --json file that exists or cannot be written."""
    check_ranges({"--seeds": min(args.seeds), "--iters": args.iters, "--jobs": args.jobs, "--threads": args.threads},
                 at_least_zero=["--seeds"], at_least_one=["--iters", "--jobs", "--threads"])
    if args.json:
        check_new_files([args.json], flag="--json", overwrite=args.overwrite)


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Run (or read back) every requested run, then print the table and one JSON line per row."""
    args = get_args_parser().parse_args(argv)
    check_args(args)
    results = run_study(args.rows, args.seeds, out=args.out, data_root=args.data_root, threads=args.threads,
                        jobs=args.jobs, iters=args.iters, flip=args.flip,
                        any_orientation=args.any_orientation, fresh_root=args.fresh)
    table = recipe_table(results)
    print(markdown([{"setting": r["row"], "rare-class IoU": r["rare_iou"], "mIoU": r["miou"],
                     "rare IoU per seed": " / ".join(map(str, r["rare_iou_per_seed"])),
                     "mIoU per seed": " / ".join(map(str, r["miou_per_seed"])),
                     "rare precision / recall": f"{_or_dash(r['rare_precision'])} / {_or_dash(r['rare_recall'])}",
                     **{f"rare IoU / mIoU, {label}": f"{r['rare_iou' + suffix]} / {r['miou' + suffix]}"
                        for suffix, label in _EXTRA_COLUMNS.items() if "rare_iou" + suffix in r}}
                    for r in table]))
    if args.json:
        write_json(args.json, table)
    return 0


def _or_dash(value: float | None) -> str:
    """A score, or '-' where it is undefined."""
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
