"""torchrun training: two Gloo processes on the demo data write one checkpoint set that evaluates and resumes
in a single process exactly like a single-process run's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets import VOCSegmentation, build_eval_transform, load_class_names
from deeplab.checkpoint import load_checkpoint
from deeplab.engine.data import build_val_loader
from deeplab.evaluation import evaluate
from deeplab.inference import Predictor
from tools import train as train_tool

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow
TINY = ["--dataset", "demo", "--crop-size", "64", "--batch-size", "4", "--val-every", "3", "--workers", "0",
        "--no-progress"]


def _torchrun(*args: str, nproc: int = 2, script: Path = REPO_ROOT / "tools" / "train.py"
              ) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone`` on tools/train.py (or ``script``), as a user would."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               str(script), *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Demo data and the output folder of a 3-step, 2-process run."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    return demo_root, out, _torchrun(*TINY, "--data-root", str(demo_root), "--iters", "3", "--out", str(out))


def test_two_processes_write_one_checkpoint_set(ddp_run) -> None:
    _, out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt", "metrics.jsonl"]
    assert result.stdout.count("done: 3 steps") == 1  # rank 0 alone reports
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 3 and not any(key.startswith("module.") for key in ckpt["model"])
    assert ckpt["args"]["batch_size"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_distributed_validation_equals_single_process_evaluation(ddp_run) -> None:
    data, out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    predictor = Predictor.from_checkpoint(out / "last.pt", device="cpu", engine="torch")
    names = load_class_names(data)
    val = VOCSegmentation(data, split="val", class_names=names,
                          transform=build_eval_transform(mean=predictor.mean, std=predictor.std))
    matrix = evaluate(predictor.engine, build_val_loader(val), num_classes=len(names))
    scores = load_checkpoint(out / "last.pt")["scores"]
    assert matrix.scores(names)["miou"] == pytest.approx(scores["miou"], abs=1e-6)
    assert matrix.scores(names)["pixel_acc"] == pytest.approx(scores["pixel_acc"], abs=1e-6)


def test_two_process_checkpoint_resumes_in_one_process(ddp_run, tmp_path: Path) -> None:
    data, out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert train_tool.main(["--resume", str(out / "last.pt"), "--iters", "5", "--out", str(tmp_path),
                            "--data-root", str(data), "--no-progress"]) == 0
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 5 and ckpt["args"]["crop_size"] == 64
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # the two-process run's history, then this one's
    assert records[:3] == [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][:3]


def test_freeze_bn_keeps_the_initial_statistics(ddp_run, tmp_path: Path) -> None:
    data, _, _ = ddp_run
    assert train_tool.main([*TINY, "--data-root", str(data), "--iters", "1", "--freeze-bn", "--out",
                            str(tmp_path)]) == 0
    state = load_checkpoint(tmp_path / "last.pt")["model"]
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert means and all(torch.equal(v, torch.zeros_like(v)) for v in means)
    assert all(int(v) == 0 for k, v in state.items() if k.endswith("num_batches_tracked"))


# tools/train.py whose rank RANK sleeps SECONDS in call CALL of MODULE.NAME: a rank that hangs (or is stopped with
# SIGSTOP) in a training step, or rank 0 preparing the data for long.
DELAYED_RANK = """
import importlib, os, sys, time
sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"], "tools"))
import train
module = importlib.import_module("{module}")

if os.environ["RANK"] == "{rank}":
    original, calls = module.{name}, []

    def delayed(*args, **kwargs):
        calls.append(1)
        if len(calls) == {call}:
            time.sleep({seconds})
        return original(*args, **kwargs)

    module.{name} = delayed
sys.exit(train.main())
"""


def _torchrun_delayed(folder: Path, data: Path, *args: str, rank: int, function: str, call: int, seconds: float
                      ) -> tuple[Path, subprocess.CompletedProcess]:
    """The output folder (in ``folder``) and result of a 2-process run on ``data`` whose ``rank`` sleeps ``seconds``
    in call ``call`` of ``function``."""
    module, name = function.rsplit(".", 1)
    script = folder / "delayed_train.py"
    script.write_text(DELAYED_RANK.format(module=module, name=name, rank=rank, call=call, seconds=seconds))
    out = folder / "run"
    return out, _torchrun(*TINY, "--data-root", str(data), "--out", str(out), *args, script=script)


def test_a_silent_rank_ends_the_run_in_one_line_naming_the_last_good_checkpoint(ddp_run, tmp_path: Path) -> None:
    data, _, _ = ddp_run
    out, result = _torchrun_delayed(tmp_path, data, "--iters", "6", "--dist-timeout", "5", rank=1,
                                    function="deeplab.engine.loop.train_step", call=4, seconds=600)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert ours == [f"error: rank 0: another process of this run stayed silent past --dist-timeout 5 s "
                    f"({ours[0].split('(', 1)[1].split(')')[0]}); {out / 'last.pt'} (step 3) is the last good "
                    f"checkpoint; continue with --resume {out / 'last.pt'}"], result.stderr[-3000:]
    assert "[rank0]: Traceback" not in result.stderr
    assert load_checkpoint(out / "last.pt")["step"] == 3


def test_a_taken_run_folder_is_one_line_from_rank_0_not_a_traceback_from_the_others(ddp_run) -> None:
    data, out, _ = ddp_run
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    result = _torchrun(*TINY, "--data-root", str(data), "--iters", "3", "--out", str(out))
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert ours == [f"error: {out}: holds another run (last.pt, best.pt, metrics.jsonl, curves.png); continue it "
                    f"with --resume {out / 'last.pt'}, or pass --out with a new folder"], result.stderr[-3000:]
    assert "[rank1]" not in result.stderr
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


# tools/train.py in an environment without the tensorboard package.
WITHOUT_TENSORBOARD = """
import os, sys
sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"], "tools"))
sys.modules["torch.utils.tensorboard"] = None  # its import fails as if the package were not installed
import train
sys.exit(train.main())
"""


def test_missing_tensorboard_stops_every_rank_with_one_line(ddp_run, tmp_path: Path) -> None:
    data, _, _ = ddp_run
    script = tmp_path / "train_without_tensorboard.py"
    script.write_text(WITHOUT_TENSORBOARD)
    result = _torchrun(*TINY, "--data-root", str(data), "--iters", "3", "--tensorboard", "--out",
                       str(tmp_path / "run"), script=script)
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert ours == ["error: --tensorboard: the tensorboard package is not installed; pip install "
                    '"deeplabv3plus-toolkit[tensorboard]" (or pip install tensorboard)'], result.stderr[-3000:]
    assert "[rank1]" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_other_ranks_wait_for_rank_0_to_prepare_the_data_past_the_timeout(ddp_run, tmp_path: Path) -> None:
    data, _, _ = ddp_run
    # As a download of VOC may, rank 0 prepares the data for longer than --dist-timeout.
    out, result = _torchrun_delayed(tmp_path, data, "--iters", "1", "--dist-timeout", "4", rank=0,
                                    function="deeplab.engine.fit._prepare_data", call=1, seconds=8)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(out / "last.pt")["step"] == 1
