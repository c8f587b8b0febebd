"""Train DeepLabV3+ on PASCAL VOC (or any VOC-format folder) or on the built-in demo data.

    python tools/train.py --dataset demo                       # offline, a few minutes on a laptop CPU
    python tools/train.py --dataset voc --data-root data/voc --download
    python tools/train.py --resume runs/demo_mobilenetv2_os16/last.pt
    python tools/train.py --init-from vainf_voc.pt --dataset voc --data-root my_data --iters 2000 --lr 0.001
    torchrun --nproc_per_node=4 tools/train.py --dataset voc       # 4 GPUs, DDP; --batch-size stays global

Flags left out take, in order: the resumed checkpoint's settings (with --init-from: that checkpoint's backbone
and output stride), then the dataset's defaults below.
A run owns its output folder: a new run never writes into a folder holding any file a run writes (without --out it
takes the next free runs/<dataset>_<backbone>_os<N>-2, -3...), a resumed run writes beside its checkpoint unless
--out is given; a run stopped before its first checkpoint removes what it wrote.
Under torchrun, --batch-size is the global batch split evenly over the processes; BatchNorm is synchronised
across GPUs (SyncBatchNorm) unless --no-sync-bn; only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: our `datasets`, not Hugging Face's)

import argparse
import sys
from collections.abc import Sequence

from backbones import list_backbones
from deeplab.engine import AMP_MODES, PRESETS, RECIPES, describe_default, fit, resolve_config
from deeplab.engine.losses import LOSS_CHOICES, LOSS_TERMS
from deeplab.engine.distributed import is_main_process, teardown_distributed
from deeplab.engine.run_dir import read_resumed, run_files
from deeplab.engine.warm_start import init_checkpoint_defaults
from deeplab.errors import interrupt_on_signals, report_user_errors
from deeplab.tool_args import check_not_empty


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags; each flag's default (a preset's or the common one) is shown from the library."""
    d = describe_default
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(PRESETS), help=f"preset and data (default {d('dataset')}; demo is "
                   "generated, offline)")
    p.add_argument("--data-root", help=f"folder holding VOCdevkit/ (default {d('data_root')})")
    p.add_argument("--split", help=f"training split (default {d('split')}; train_aug after tools/convert_sbd.py)")
    p.add_argument("--val-split", help=f"validation split (default {d('val_split')})")
    p.add_argument("--download", action="store_true", help="download VOC 2012 into --data-root if missing")
    p.add_argument("--backbone", metavar="NAME",
                   help=f"feature extractor: {', '.join(list_backbones())} (default {d('backbone')})")
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                   help=f"backbone output stride (default {d('output_stride')})")
    p.add_argument("--pretrained-backbone", metavar="{imagenet,none,PATH}",
                   help=f"backbone initialisation (default {d('pretrained_backbone')})")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, help=f"total optimizer steps ({d('iters')})")
    length.add_argument("--epochs", type=int, help="train this many passes over the split instead of --iters")
    p.add_argument("--batch-size", type=int,
                   help=f"GLOBAL images per step, split evenly over torchrun's processes ({d('batch_size')})")
    p.add_argument("--crop-size", type=int, help=f"square training crop ({d('crop_size')})")
    p.add_argument("--min-scale", type=float, help="smallest random rescaling of a training image before the crop "
                   f"(default {d('min_scale')})")
    p.add_argument("--max-scale", type=float, help=f"largest such rescaling (default {d('max_scale')})")
    p.add_argument("--lr", type=float, help=f"base learning rate ({d('lr')})")
    p.add_argument("--weight-decay", type=float,
                   help=f"L2 on conv/linear weights, not BN/bias (default {d('weight_decay')})")
    p.add_argument("--backbone-lr-scale", type=float,
                   help=f"backbone lr = lr x this (default {d('backbone_lr_scale')})")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up steps (default 5%% of the run, at most 500)")
    p.add_argument("--val-every", type=int, help=f"validate and save last.pt every N steps ({d('val_every')})")
    p.add_argument("--val-batch-size", type=int,
                   help=f"validation batch of full images (default {d('val_batch_size')})")
    p.add_argument("--workers", type=int, help=f"data-loading processes (default {d('workers')})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when available")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA (default auto: bf16/fp16)")
    p.add_argument("--freeze-bn", action="store_true", default=None,
                   help="freeze BatchNorm statistics and scale/shift (fine-tuning with small batches)")
    p.add_argument("--freeze-early-stages", action="store_true", default=None,
                   help="freeze the backbone up to its stride-4 feature (weights and BN statistics)")
    p.add_argument("--no-sync-bn", dest="sync_bn", action="store_false", default=None,
                   help="under torchrun on GPUs, normalise per GPU instead of with SyncBatchNorm")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help=f"under torchrun, fail when other ranks stay silent this long (default {d('dist_timeout')})")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="a measured bundle of settings (loss, sampling, rescaling); flags given beside it win "
                   "(README: imbalanced data)")
    p.add_argument("--loss", help=f"training loss: {', '.join(LOSS_CHOICES)}, or any '+'-joined set of "
                   f"{', '.join(LOSS_TERMS)}, each optionally scaled as in 'ce+3*dice' (default {d('loss')})")
    p.add_argument("--class-weights", metavar="{auto,none,FILE}",
                   help="per-class loss weights: auto (bounded inverse square root of the split's pixel shares, "
                   "cached beside the data), none, or a file of one weight per class line "
                   f"(default {d('class_weights')})")
    p.add_argument("--ohem", type=float, metavar="SHARE",
                   help="hard-pixel mining: cross-entropy over only this share of the hardest labelled pixels of "
                   "each batch, e.g. 0.25 (default: all)")
    p.add_argument("--balanced-crops", type=float, metavar="SHARE",
                   help="share of samples cropped around a class drawn by rarity, from an image holding it "
                   f"(default {d('balanced_crops')})")
    p.add_argument("--copy-paste", type=float, metavar="SHARE",
                   help="share of samples into which one object of a class drawn by rarity, from another training "
                   f"image, is pasted at a random place (default {d('copy_paste')})")
    p.add_argument("--color-jitter", type=float, metavar="SHARE",
                   help="share of samples whose colours are jittered (any hue, some saturation, brightness and "
                   "contrast), so shape rather than colour must name a class; image only, masks untouched "
                   f"(default {d('color_jitter')})")
    p.add_argument("--any-orientation", action="store_true", default=None,
                   help="images have no up or down (aerial, microscopy): each crop is shown in one of its eight "
                   "mirrors and quarter turns instead of only mirrored left-right")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log to TensorBoard in <out>/tensorboard (pip install tensorboard)")
    p.add_argument("--seed", type=int, help=f"seed of initialisation, data order and augmentation (default {d('seed')})")
    p.add_argument("--out", help="output folder; must hold none of the files a run writes (default "
                   "runs/<dataset>_<backbone>_os<N>, numbered -2, -3... when taken; with --resume: the checkpoint's "
                   "folder)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="CKPT", help="continue the run saved in this last.pt")
    start.add_argument("--init-from", metavar="CKPT", help="start a new run from this checkpoint's weights (ours or "
                       "imported): matching tensors load, a classifier for other classes starts fresh; its backbone, "
                       "output stride and architecture are the defaults")
    p.add_argument("--ignore-class-names", action="store_true",
                   help="resume (or, with --init-from, load the classifier) although the checkpoint's class names "
                   "differ from the data's (same ids, renamed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    return p


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, train, print a summary; exit status 2 with one line on a user error."""
    flags = vars(get_args_parser().parse_args(argv))
    check_not_empty({f"--{key.replace('_', '-')}": value for key, value in flags.items() if isinstance(value, str)})
    resume_path, download, no_progress = flags.pop("resume"), flags.pop("download"), flags.pop("no_progress")
    ignore_class_names = flags.pop("ignore_class_names")
    resumed = read_resumed(resume_path) if resume_path else None
    inherited = resumed.get("args", {}) if resumed else {}
    if flags["init_from"]:
        inherited = init_checkpoint_defaults(flags["init_from"])
    config = resolve_config(flags, inherited)
    try:
        with interrupt_on_signals():  # Ctrl-C and a scheduler's SIGTERM stop alike, naming the last good checkpoint
            result = fit(config, resume=resumed, resume_path=resume_path, download=download,
                         progress=not no_progress, ignore_class_names=ignore_class_names)
        report = is_main_process()
    finally:
        teardown_distributed()  # also on errors: a clean exit instead of an abort in Gloo's threads
    if report:
        minutes, seconds = divmod(int(result.seconds), 60)
        last = result.last_scores or {}
        print(f"done: {result.steps} steps in {minutes}m{seconds:02d}s; best val mIoU {result.best_miou:.4f}"
              + (f", last {last['miou']:.4f} (pixel acc {last['pixel_acc']:.4f})" if last else ""))
        print(f"files in {result.out_dir}: {', '.join(run_files(result.out_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
