"""tools/train.py end to end on tiny data: outputs, learning, exact resume, and its guards (NaN, full disk,
bad output folder, bad image in a worker), and new runs started from another checkpoint (--init-from)."""
from __future__ import annotations

import contextlib
import errno
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import save_label_png
from datasets.voc import split_file
from deeplab import DeepLabV3Plus
from deeplab.checkpoint import load_checkpoint, model_from_checkpoint
from deeplab.engine import data as engine_data
from deeplab.engine import distributed
from deeplab.engine.losses import SegmentationLoss
from tools import eval as eval_tool
from tools import train as train_tool

FAST = ["--crop-size", "32", "--batch-size", "2", "--workers", "0", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> Path:
    """The demo dataset with a two-image validation split, so each validation takes a moment."""
    split_file(demo_root, "val2").write_text("val_0000\nval_0001\n")
    return demo_root


def demo_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "demo", "--data-root", str(root), "--val-split", "val2", "--out", str(out), *FAST, *extra]


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_demo_run_learns_and_writes_its_files(demo, tmp_path, capsys):
    out = tmp_path / "run"
    args = demo_args(demo, out, "--iters", "20", "--val-every", "10", "--crop-size", "48", "--batch-size", "4",
                     "--lr", "0.01")
    assert train_tool.main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "metrics.jsonl", "curves.png"}
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 20 and ckpt["class_names"][1] == "circle"
    assert ckpt["model_config"]["num_classes"] == 5 and ckpt["args"]["iters"] == 20
    model_from_checkpoint(ckpt, out / "last.pt")
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 21))
    assert [r["step"] for r in log if "miou" in r] == [10, 20]
    losses = [r["loss"] for r in log]
    # Per-batch losses are noisy (crops differ); the untrained start (~ln 5) is not.
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:3]) / 3
    assert "best val mIoU" in capsys.readouterr().out


@pytest.mark.slow
def test_voc_mini_trains_a_couple_of_steps(tmp_path, voc_mini):
    out = tmp_path / "voc"
    args = ["--dataset", "voc", "--data-root", str(voc_mini), "--pretrained-backbone", "none", "--iters", "2",
            "--out", str(out), *FAST]
    assert train_tool.main(args) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["model_config"]["num_classes"] == 21 and len(ckpt["class_names"]) == 21
    assert 0.0 <= ckpt["scores"]["miou"] <= 1.0


def test_a_cvat_export_with_rgb_masks_trains_and_evaluates(tmp_path, make_cvat_folder):
    """CVAT's "Segmentation mask" export: labelmap.txt names the classes and gives the colours of its RGB masks."""
    masks = {f"m{i}": np.zeros((36, 36), np.uint8) for i in range(3)}
    for i, mask in enumerate(masks.values()):
        mask[4 + i:20, 6:24], mask[26:, :] = 1, 2
    make_cvat_folder(tmp_path / "data", masks)
    split_file(tmp_path / "data", "val").write_text("m0\nm1\n")
    out = tmp_path / "run"
    assert train_tool.main(["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--pretrained-backbone", "none",
                            "--iters", "2", "--out", str(out), *FAST]) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["class_names"] == ["background", "cat", "snow"] and ckpt["model_config"]["num_classes"] == 3
    assert eval_tool.main(["--checkpoint", str(out / "best.pt"), "--data-root", str(tmp_path / "data"), "--engine",
                           "torch", "--workers", "0", "--json", str(tmp_path / "val.json")]) == 0
    scores = json.loads((tmp_path / "val.json").read_text())
    assert scores["miou"] == pytest.approx(ckpt["scores"]["miou"])
    assert list(scores["per_class_iou"]) == ckpt["class_names"]


class SimulatedCrash(Exception):
    pass


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(demo, tmp_path, failing_train_step):
    common = ("--iters", "6", "--val-every", "3", "--lr", "0.02", "--warmup-iters", "2")
    full, broken = tmp_path / "full", tmp_path / "broken"
    assert train_tool.main(demo_args(demo, full, *common)) == 0
    # The fifth step crashes: step 4 is logged but not checkpointed, so resume must drop it.
    with failing_train_step(5, SimulatedCrash), pytest.raises(SimulatedCrash):
        train_tool.main(demo_args(demo, broken, *common))
    assert [r["step"] for r in read_log(broken)] == [1, 2, 3, 4]
    assert train_tool.main(["--resume", str(broken / "last.pt"), "--workers", "0", "--no-progress"]) == 0

    assert read_log(broken) == read_log(full)  # same steps, losses, lrs and mIoUs, no gaps or repeats
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (full, broken))
    assert a["step"] == b["step"] == 6 and a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_run_resumed_with_another_batch_size_goes_on_where_its_data_stopped(demo, tmp_path, monkeypatch,
                                                                              failing_train_step):
    """Each sample of the stream is (image, augmentation seed, draws): the resumed run's first batch must be the
    samples after the last one the checkpoint trained on, not step x the new batch."""
    samples = []
    take = engine_data._SeededAugmentation.__getitem__
    monkeypatch.setattr(engine_data._SeededAugmentation, "__getitem__",
                        lambda self, item: samples.append(item) or take(self, item))
    common = ("--iters", "4", "--val-every", "2")
    assert train_tool.main(demo_args(demo, tmp_path / "straight", *common)) == 0
    stream = list(samples)
    with failing_train_step(3, SimulatedCrash), pytest.raises(SimulatedCrash):
        train_tool.main(demo_args(demo, tmp_path / "broken", *common))
    samples.clear()
    assert train_tool.main(["--resume", str(tmp_path / "broken" / "last.pt"), "--batch-size", "4", "--iters", "3",
                            "--workers", "0", "--no-progress"]) == 0
    assert samples == stream[4:8]
    assert load_checkpoint(tmp_path / "broken" / "last.pt")["samples"] == 8


def test_epochs_of_a_run_resumed_at_another_batch_size_count_the_epochs_it_did(demo, tmp_path, capsys):
    split_file(demo, "train3").write_text("train_0000\ntrain_0001\ntrain_0002\n")
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--split", "train3", "--epochs", "1")) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 2  # an epoch of 3 images at batch 2: 2 steps
    resume = ["--resume", str(out / "last.pt"), "--epochs", "2", "--workers", "0", "--no-progress"]
    capsys.readouterr()
    assert train_tool.main([*resume, "--batch-size", "4", "--out", str(tmp_path / "batch4")]) == 0
    assert load_checkpoint(tmp_path / "batch4" / "last.pt")["step"] == 3  # the second epoch: 1 step of 4
    # A resume that changes a setting says so (its length and the machine's settings aside).
    assert f"note: {out / 'last.pt'} goes on with changed settings: --batch-size 2 -> 4\n" in capsys.readouterr().out
    assert train_tool.main([*resume, "--out", str(tmp_path / "batch2")]) == 0
    assert load_checkpoint(tmp_path / "batch2" / "last.pt")["step"] == 4  # as a run of 2 epochs at batch 2
    assert "changed settings" not in capsys.readouterr().out


def test_resume_with_another_backbone_or_class_count_is_refused(demo, tmp_path, capsys, voc_mini):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1")) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["model_config"]["backbone"] = ckpt["args"]["backbone"] = "otherbackbone"
    torch.save(ckpt, tmp_path / "other.pt")
    assert train_tool.main(["--resume", str(tmp_path / "other.pt"), "--backbone", "mobilenetv2", *FAST]) == 2
    err = capsys.readouterr().err
    assert "other.pt" in err and "otherbackbone" in err and "mobilenetv2" in err and len(err.splitlines()) == 1
    args = ["--resume", str(out / "last.pt"), "--iters", "2", "--dataset", "voc", "--data-root", str(voc_mini), *FAST]
    assert train_tool.main(args) == 2
    err = capsys.readouterr().err
    assert "last.pt" in err and "5 classes" in err and "21" in err
    del ckpt["optimizer"]
    ckpt["model_config"]["backbone"] = ckpt["args"]["backbone"] = "mobilenetv2"
    torch.save(ckpt, tmp_path / "partial.pt")
    assert train_tool.main(["--resume", str(tmp_path / "partial.pt"), "--iters", "2", *FAST]) == 2
    assert "partial.pt: cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--freeze-bn", "--freeze-early-stages"])
def test_resume_that_freezes_what_its_run_trained_is_refused_before_any_work(demo, tmp_path, capsys, flag):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert train_tool.main(["--resume", str(out / "last.pt"), flag, "--iters", "2", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: {out / 'last.pt'} was trained without it") and len(err.splitlines()) == 1
    assert f"--init-from {out / 'last.pt'}" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_of_a_finished_run_is_refused_and_leaves_no_folder(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1")) == 0
    capsys.readouterr()
    assert train_tool.main(["--resume", str(out / "last.pt"), "--out", str(tmp_path / "more"), *FAST]) == 2
    assert capsys.readouterr().err == (f"error: --iters/--epochs: 1 steps asked for, but {out / 'last.pt'} is at "
                                       "step 1 already; ask for more to continue it\n")
    assert not (tmp_path / "more").exists()


def test_a_resumed_batch_size_the_processes_cannot_share_is_named_as_the_runs(demo, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1", "--batch-size", "3")) == 0
    capsys.readouterr()
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)  # as under torchrun with two processes
    assert train_tool.main(["--resume", str(out / "last.pt"), "--iters", "2", "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"error: --batch-size 3: the global batch must be divisible by the 2 "
                                       f"processes; it is the batch size {out / 'last.pt'} was trained with: pass "
                                       "--batch-size with a multiple of 2 (a run resumes at any batch size)\n")


def test_a_run_resumed_into_a_new_folder_names_only_the_files_it_wrote(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1")) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["best_miou"] = 1.0  # no validation of the resumed run beats it: no best.pt in the new folder
    torch.save(ckpt, tmp_path / "unbeatable.pt")
    capsys.readouterr()
    assert train_tool.main(["--resume", str(tmp_path / "unbeatable.pt"), "--iters", "2", "--out", str(tmp_path / "b"),
                            *FAST]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"files in {tmp_path / 'b'}: last.pt, metrics.jsonl, curves.png"


def test_a_run_resumed_on_another_validation_split_chooses_best_pt_anew(demo, tmp_path, capsys):
    split_file(demo, "val3").write_text("val_0002\n")
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1")) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["best_miou"] = 1.0  # measured on val2: no score on val3 may be judged against it
    torch.save(ckpt, tmp_path / "unbeatable.pt")
    capsys.readouterr()
    assert train_tool.main(["--resume", str(tmp_path / "unbeatable.pt"), "--iters", "2", "--val-split", "val3",
                            "--out", str(tmp_path / "b"), *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"note: {tmp_path / 'unbeatable.pt'} goes on with changed settings: --val-split val2 -> val3"
    assert lines[1] == ("note: this run validates on split val3, but its best mIoU 1.0000 was measured on split val2; "
                        "best.pt is chosen anew from the next validation")
    best = load_checkpoint(tmp_path / "b" / "best.pt")
    assert best["step"] == 2 and best["best_miou"] == read_log(tmp_path / "b")[-1]["miou"] < 1.0


def test_a_run_resumed_into_a_new_folder_logs_and_plots_from_step_one(demo, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert train_tool.main(demo_args(demo, first, "--iters", "2", "--val-every", "1")) == 0
    assert train_tool.main(["--resume", str(first / "last.pt"), "--iters", "3", "--out", str(second), *FAST]) == 0
    log = read_log(second)
    assert [r["step"] for r in log] == [1, 2, 3] and log[:2] == read_log(first)


def test_resuming_a_weights_only_checkpoint_points_to_init_from_before_any_work(make_checkpoint, tmp_path, capsys,
                                                                                monkeypatch):
    make_checkpoint(tmp_path / "imported.pt", num_classes=5)
    monkeypatch.chdir(tmp_path)  # no data/voc here: the VOC default the checkpoint leaves must not be reached
    assert train_tool.main(["--resume", "imported.pt", "--iters", "2", *FAST]) == 2
    assert capsys.readouterr().err == ("error: imported.pt: cannot resume from this checkpoint: it holds weights but "
                                       "no training state (optimizer, scheduler, step, rng); start a new run from "
                                       "them with --init-from imported.pt\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported.pt"]


def test_a_relative_data_root_resumes_from_elsewhere_and_steps_never_go_back(demo, tmp_path, capsys, monkeypatch):
    (tmp_path / "work").mkdir()
    shutil.copytree(demo, tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path / "work")
    args = demo_args(Path("data"), tmp_path / "run", "--iters", "2", "--val-every", "1")
    assert train_tool.main(args) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["args"]["data_root"] == str(tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved root still names the data, nothing is generated here
    resume = ["--resume", str(tmp_path / "run" / "last.pt"), "--workers", "0", "--no-progress"]
    assert train_tool.main([*resume, "--iters", "3"]) == 0 and not (tmp_path / "data").exists()
    before = (tmp_path / "run" / "last.pt").read_bytes()
    assert train_tool.main([*resume, "--iters", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("1 steps asked for, but " f"{tmp_path / 'run' / 'last.pt'} is at step 3 already; ask for more "
                        "to continue it"), err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    # A relative root given with --resume (the data moved) is saved absolute too, so the next resume finds it.
    (tmp_path / "work" / "data").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "work")
    assert train_tool.main([*resume, "--iters", "4", "--data-root", "../moved"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["args"]["data_root"] == str(tmp_path / "moved")
    (tmp_path / "work" / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work" / "elsewhere")  # where ../moved would be a folder of new demo data
    assert train_tool.main([*resume, "--iters", "5"]) == 0 and not (tmp_path / "work" / "moved").exists()


def test_a_resume_whose_data_has_moved_asks_for_its_new_place(demo, tmp_path, capsys):
    shutil.copytree(demo, tmp_path / "data")
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--val-split", "val2", "--pretrained-backbone",
            "none", "--out", str(tmp_path / "run"), *FAST, "--iters", "2", "--val-every", "1"]
    assert train_tool.main(args) == 0
    (tmp_path / "data").rename(tmp_path / "moved")
    resume = ["--resume", str(tmp_path / "run" / "last.pt"), "--iters", "3", "--workers", "0", "--no-progress"]
    assert train_tool.main(resume) == 2
    assert capsys.readouterr().err == (f"error: --data-root {tmp_path / 'data'}: no such folder; "
                                       f"{tmp_path / 'run' / 'last.pt'} was trained on data there: if it has moved, "
                                       "pass --data-root with its new place\n")
    assert train_tool.main([*resume, "--data-root", str(tmp_path / "moved")]) == 0


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(demo, tmp_path, monkeypatch, capsys):
    real_loss, calls = SegmentationLoss.forward, []

    def nan_at_step_5(self, logits, masks):
        calls.append(1)
        loss = real_loss(self, logits, masks)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(SegmentationLoss, "forward", nan_at_step_5)
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "8", "--val-every", "2")) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"training stopped at step 5: the loss is nan (try a lower --lr or a longer "
                                f"--warmup-iters); {out / 'last.pt'} (step 4) is the last good checkpoint; continue "
                                f"with --resume {out / 'last.pt'}"), err
    assert len(err.strip().splitlines()) == 1
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4
    model = model_from_checkpoint(ckpt, out / "last.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert max(r["step"] for r in read_log(out)) == 4


def test_nan_loss_of_a_run_resumed_into_a_new_folder_names_the_resumed_checkpoint(demo, tmp_path, monkeypatch,
                                                                                   capsys):
    first = tmp_path / "first"
    assert train_tool.main(demo_args(demo, first, "--iters", "2")) == 0
    real_loss = SegmentationLoss.forward
    monkeypatch.setattr(SegmentationLoss, "forward", lambda self, logits, masks: real_loss(self, logits, masks) * 1e39)
    second = tmp_path / "second"
    assert train_tool.main(["--resume", str(first / "last.pt"), "--iters", "4", "--out", str(second)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"training stopped at step 3: the loss is inf (try a lower --lr or a longer --warmup-iters); "
                        f"no checkpoint of this run was written to {second}; {first / 'last.pt'} is still the last "
                        f"good checkpoint; continue with --resume {first / 'last.pt'} --out {second}"), err


def test_nan_scores_at_a_validation_stop_the_run_naming_the_last_good_checkpoint(demo, tmp_path, monkeypatch, capsys):
    real_forward, validations = DeepLabV3Plus.forward, []

    def diverged_at_the_second_validation(self, x):
        logits = real_forward(self, x)
        if not self.training:
            validations.append(1)
        return logits * float("nan") if not self.training and len(validations) > 1 else logits

    monkeypatch.setattr(DeepLabV3Plus, "forward", diverged_at_the_second_validation)
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "4", "--val-every", "2", "--val-batch-size", "40")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model's class scores on a ") and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith(f"{out / 'last.pt'} (step 2) is the last good checkpoint; continue with --resume "
                                f"{out / 'last.pt'}"), err
    assert load_checkpoint(out / "last.pt")["step"] == 2


def test_a_ctrl_c_whose_exception_python_lost_still_stops_the_run(demo, tmp_path, monkeypatch, capsys):
    from deeplab.engine import loop

    real_step, calls = loop.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # as in an at-fork callback while workers start: "Exception ignored in ..."
            with contextlib.suppress(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step)
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "5", "--val-every", "1")) == 130
    assert capsys.readouterr().err == (f"interrupted: {out / 'last.pt'} (step 3) is the last good checkpoint; "
                                       f"continue with --resume {out / 'last.pt'}\n")
    assert len(calls) == 3


def test_full_disk_keeps_the_previous_checkpoint(demo, tmp_path, monkeypatch, capsys):
    real_save, calls = torch.save, []

    def full_disk_after_two(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # best.pt and last.pt of step 2 are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_after_two)
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "4", "--val-every", "2")) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.splitlines()) == 1
    assert err.endswith(f"{out / 'last.pt'} (step 2) is the last good checkpoint; continue with --resume "
                        f"{out / 'last.pt'}\n"), err
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2
    model_from_checkpoint(ckpt, out / "last.pt")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_output_folder_fails_before_training(demo, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert train_tool.main(demo_args(demo, tmp_path / "file" / "out", "--iters", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cannot write" in err and "training" not in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--out", "--data-root", "--resume", "--init-from"])
def test_an_empty_path_flag_is_refused_before_anything_is_written(flag, tmp_path, monkeypatch, capsys):
    """``--out "$RUN"`` with RUN unset: the working folder would take the run (or the demo data), and an empty
    --resume or --init-from would start a new run from scratch as if the flag were not given."""
    monkeypatch.chdir(tmp_path)
    assert train_tool.main(["--dataset", "demo", flag, "", *FAST]) == 2
    assert capsys.readouterr().err == (f"error: {flag}: is empty (an unset shell variable?); give it a value or "
                                       "leave it out\n")
    assert not any(tmp_path.iterdir())


def test_mixed_precision_without_cuda_is_refused_before_the_data_is_made(tmp_path, capsys):
    args = ["--dataset", "demo", "--data-root", str(tmp_path / "data"), "--device", "cpu", "--amp", "bf16",
            "--out", str(tmp_path / "run"), *FAST]
    assert train_tool.main(args) == 2
    assert capsys.readouterr().err == "error: --amp bf16: mixed precision needs a CUDA device, not cpu\n"
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_a_gpu_runs_mixed_precision_resumed_on_a_cpu_says_how_to_go_on(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tool.main(demo_args(demo, out, "--iters", "1")) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["args"]["amp"] = "fp16"  # as trained on a GPU with --amp fp16
    torch.save(ckpt, out / "last.pt")
    capsys.readouterr()
    resume = ["--resume", str(out / "last.pt"), "--iters", "2", "--device", "cpu", "--workers", "0", "--no-progress"]
    assert train_tool.main(resume) == 2
    assert capsys.readouterr().err == (f"error: --amp fp16: mixed precision needs a CUDA device, not cpu; "
                                       f"{out / 'last.pt'} was trained with it: pass --amp off to resume it here\n")
    assert train_tool.main([*resume, "--amp", "off"]) == 0


def test_a_bad_backbone_weights_file_is_refused_before_the_data_is_made(tmp_path, capsys):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    (tmp_path / "downloads").mkdir()
    for weights, problem in (("missing.pth", "weights file not found"), ("other.pth", "not a MobileNetV2"),
                             ("downloads", "is a folder, not a weights file")):
        args = ["--dataset", "demo", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                "--pretrained-backbone", str(tmp_path / weights), *FAST]
        assert train_tool.main(args) == 2
        assert capsys.readouterr().err.startswith(f"error: {tmp_path / weights}: {problem}")
        assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()


def test_unknown_backbone_is_a_one_line_error_with_suggestions(capsys):
    assert train_tool.main(["--backbone", "mobilenet_v4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backbone: unknown backbone 'mobilenet_v4'; did you mean mobilenetv4_conv_medium, ")
    assert len(err.strip().splitlines()) == 1


def test_imagenet_weights_for_a_backbone_without_them_fail_before_any_data(tmp_path, capsys):
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "absent"), "--backbone", "blazenet"]
    assert train_tool.main(args) == 2  # the voc preset starts from ImageNet weights
    err = capsys.readouterr().err
    assert err.startswith("error: blazenet has no upstream ImageNet weights") and "mobilenetv2" in err
    assert not (tmp_path / "absent").exists()


def test_bad_image_in_a_worker_reaches_the_user_as_one_line(tmp_path, capsys, voc_mini):
    root = tmp_path / "voc"
    shutil.copytree(voc_mini / "VOCdevkit", root / "VOCdevkit")
    broken = sorted((root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[3]
    broken.write_bytes(b"not a jpeg")
    args = ["--dataset", "voc", "--data-root", str(root), "--pretrained-backbone", "none", "--iters", "4",
            "--out", str(tmp_path / "out"), *FAST[:4], "--workers", "2", "--no-progress"]
    assert train_tool.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}: ") and len(err.strip().splitlines()) == 1


# --init-from: a new run from an imported (or our own) checkpoint, fine-tuned on other classes.
@pytest.mark.slow
def test_imported_voc_model_fine_tunes_on_five_classes_at_os8(demo, imported_checkpoint, tmp_path, capsys) -> None:
    source_path = imported_checkpoint("vainf")
    out = tmp_path / "fine_tuned"
    # lr 0: the step leaves every weight as loaded, so what was loaded can be compared exactly.
    args = demo_args(demo, out, "--init-from", str(source_path), "--iters", "1", "--val-every", "1", "--lr", "0",
                     "--output-stride", "8")
    assert train_tool.main(args) == 0
    printed = capsys.readouterr().out
    ckpt, source = load_checkpoint(out / "last.pt"), load_checkpoint(source_path)
    total = len(source["model"])
    assert f"initialised from {source_path}: loaded {total - 2} of {total} tensors" in printed
    assert "[21, 256, 1, 1] in the checkpoint, [5, 256, 1, 1] here (re-initialised): decoder.classifier.weight" in printed
    config = ckpt["model_config"]
    assert (config["num_classes"], config["output_stride"], config["atrous_rates"]) == (5, 8, [12, 24, 36])
    assert {k: config[k] for k in ("decoder_convs", "low_level_first", "pad_block_input", "mean")} == {
        k: source["model_config"][k] for k in ("decoder_convs", "low_level_first", "pad_block_input", "mean")}
    for name, tensor in ckpt["model"].items():
        if name.startswith("decoder.classifier."):
            assert tensor.shape[0] == 5
        elif not name.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN statistics move
            assert torch.equal(tensor, source["model"][name]), name
    # The run continues in the imported architecture.
    assert train_tool.main(["--resume", str(out / "last.pt"), "--iters", "2", "--no-progress", "--workers", "0"]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 2


@pytest.mark.slow
def test_init_from_our_own_checkpoint_of_other_classes(demo, make_checkpoint, tmp_path, capsys) -> None:
    total = len(make_checkpoint(tmp_path / "voc.pt", num_classes=21, width_mult=1.0).state_dict())
    args = demo_args(demo, tmp_path / "run", "--init-from", str(tmp_path / "voc.pt"), "--iters", "1", "--val-every", "1")
    assert train_tool.main(args) == 0
    assert f"loaded {total - 2} of {total} tensors" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["foreign_file", "other_backbone"])
def test_bad_init_checkpoint_is_one_line(case: str, demo, import_fixture, imported_checkpoint, tmp_path, capsys) -> None:
    if case == "foreign_file":
        path, extra, words = import_fixture("vainf") / "checkpoint.pth", [], "tools/import_checkpoint.py"
    else:
        path, extra, words = imported_checkpoint("vainf"), ["--backbone", "mobilenetv3_small"], "leave --backbone out"
    rc = train_tool.main(demo_args(demo, tmp_path / "run", "--init-from", str(path), "--iters", "1", *extra))
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith(f"error: {path}: ") and words in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("flag", ["--resume", "--init-from"])
def test_a_model_config_the_model_cannot_take_is_one_line_before_any_work(flag, make_checkpoint, tmp_path, capsys):
    path = tmp_path / "newer.pt"
    make_checkpoint(path, num_classes=5)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["foo"] = 1  # a newer or foreign checkpoint's setting
    torch.save(ckpt, path)
    data = tmp_path / "demo"
    assert train_tool.main(["--dataset", "demo", "--data-root", str(data), "--out", str(tmp_path / "run"), flag,
                            str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: invalid model_config (") and "'foo'" in err
    assert len(err.strip().splitlines()) == 1
    assert not data.exists() and not (tmp_path / "run").exists()


def test_a_class_no_validation_mask_holds_is_named_once_before_the_first_step(tmp_path, make_voc_folder,
                                                                             failing_train_step, capsys):
    mask = np.zeros((36, 36), np.uint8)
    mask[8:20, 8:20] = 255  # the object stored as void: a common slip
    make_voc_folder(tmp_path / "data", {"a": mask, "b": mask}, classes=["background", "object"])
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--val-split", "train", "--pretrained-backbone",
            "none", "--iters", "2", "--val-every", "1", "--out", str(tmp_path / "run"), *FAST]
    expected = ["warning: class 'object' occurs in no validation mask; left out of mIoU, or scored 0 where "
                "predicted (masks store it as another value? 255 is void)"]
    with failing_train_step(1, KeyboardInterrupt):
        assert train_tool.main(args) == 130
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")] == expected
    assert train_tool.main(args) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")] == expected


@pytest.mark.parametrize("flag, purpose", [("--split", "train on"), ("--val-split", "validate on")])
def test_a_split_of_void_masks_is_one_line_and_no_run(flag, purpose, tmp_path, make_voc_folder, capsys):
    """Objects saved as 255 everywhere: training would learn from loss 0, validation score mIoU 0 at every step."""
    mask = np.zeros((36, 36), np.uint8)
    mask[8:20, 8:20] = 1
    make_voc_folder(tmp_path / "data", {"a": mask, "b": mask}, classes=["background", "object"])
    make_voc_folder(tmp_path / "data", {"v": np.full((36, 36), 255, np.uint8)}, split="void",
                    classes=["background", "object"])
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--split", "train", "--val-split", "train",
            flag, "void", "--pretrained-backbone", "none", "--iters", "2", "--out", str(tmp_path / "run"), *FAST]
    assert train_tool.main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {flag} void: every pixel of its masks under {tmp_path / 'data'} is void (255); "
                   f"nothing to {purpose}\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["val", "train"])
def test_a_bad_mask_is_one_line_before_the_first_step(split, tmp_path, make_voc_folder, failing_train_step, capsys):
    """In either split: a training mask loaded late in the first epoch would end the run before its first
    checkpoint as surely as a validation mask at the first validation."""
    masks = {**{f"a{i}": np.zeros((36, 36), np.uint8) for i in range(9)}, "b": np.ones((36, 36), np.uint8)}
    base = make_voc_folder(tmp_path / "data", masks, classes=["background", "object"])
    other = "train" if split == "val" else "val"
    (base / f"ImageSets/Segmentation/{other}.txt").write_text("a0\n")
    (base / f"ImageSets/Segmentation/{split}.txt").write_text("\n".join(masks) + "\n")  # b not in the first batch
    save_label_png(base / "SegmentationClass" / "b.png", np.ones((36, 35), np.uint8))  # one column cropped away
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--pretrained-backbone", "none", "--iters", "2",
            "--out", str(tmp_path / "run"), *FAST]
    with failing_train_step(1, AssertionError("trained before the masks were checked")):
        assert train_tool.main(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: {base / 'SegmentationClass' / 'b.png'}: mask is 35x36 but its image b.jpg is 36x36 (WxH)\n"


def test_validation_ids_listed_twice_are_named(tmp_path, make_voc_folder, failing_train_step, capsys):
    make_voc_folder(tmp_path / "data", {"a": np.zeros((36, 36), np.uint8), "b": np.ones((36, 36), np.uint8)},
                    classes=["background", "object"])
    split_file(tmp_path / "data", "val").write_text("a\nb\na\n")  # two lists merged by hand
    args = ["--dataset", "voc", "--data-root", str(tmp_path / "data"), "--pretrained-backbone", "none", "--iters", "1",
            "--out", str(tmp_path / "run"), *FAST]
    with failing_train_step(1, KeyboardInterrupt):
        assert train_tool.main(args) == 130
    out = capsys.readouterr().out
    assert "warning: split val lists a more than once; each copy counts again in the validation scores\n" in out
    assert ("warning: 2 of the 2 images of split val are also in split train (a, b); the validation scores flatter "
            "the model on them\n") in out


def test_resuming_where_classes_txt_is_missing_says_so(tmp_path, make_voc_folder, make_checkpoint, capsys):
    make_voc_folder(tmp_path / "data", {"a": np.zeros((36, 36), np.uint8)}, classes=["background", "a", "b"])
    make_checkpoint(tmp_path / "last.pt", ["background", "a", "b"], num_classes=3)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save({**ckpt, "step": 0, "optimizer": {}, "scheduler": {}, "rng": {}}, tmp_path / "last.pt")  # a run's
    (tmp_path / "data" / "classes.txt").unlink()  # not copied along to this machine
    args = ["--resume", str(tmp_path / "last.pt"), "--dataset", "voc", "--data-root", str(tmp_path / "data"),
            "--iters", "1", "--out", str(tmp_path / "run"), *FAST]
    assert train_tool.main(args) == 2
    data = tmp_path / "data"
    assert capsys.readouterr().err == (f"error: {tmp_path / 'last.pt'}: checkpoint has 3 classes, but {data} "
                                       "(VOC's classes, no classes.txt) has 21\n")
