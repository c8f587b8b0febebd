"""tools/train.py --init-from: a new run from an imported (or our own) checkpoint, fine-tuned on other classes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datasets.voc import split_file
from deeplab.checkpoint import load_checkpoint
from tools import train as train_tool

FAST = ["--crop-size", "32", "--batch-size", "2", "--workers", "0", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> Path:
    split_file(demo_root, "val2").write_text("val_0000\nval_0001\n")
    return demo_root


def demo_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "demo", "--data-root", str(root), "--val-split", "val2", "--out", str(out), *FAST, *extra]


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
