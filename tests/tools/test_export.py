"""tools/export.py: writes the ONNX file atomically and prints its parity with PyTorch; an existing --out, a missing
checkpoint or an input size beyond memory is one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deeplab.inference import export as export_module
from tools import export as export_tool


def test_export_tool_writes_file_and_prints_parity(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    out = tmp_path / "out" / "model.onnx"
    assert export_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and out.stat().st_size > 100_000
    printed = capsys.readouterr().out
    assert "parity on 1x3x97x131: max abs logit diff" in printed
    agreement = float(printed.split("argmax agreement ")[1].split("%")[0])
    assert agreement >= 99.9


def test_a_device_as_out_is_reported_without_a_size(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    assert export_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--out", os.devnull]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {os.devnull} (input N x 3 x H x W, all dynamic)\n")


def test_the_onnx_file_says_how_to_normalise_its_input_and_names_the_classes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], imported_checkpoint) -> None:
    """bubbliiiing's model takes RGB / 255 unnormalised: a deployment must not guess ImageNet's statistics."""
    out = tmp_path / "model.onnx"
    assert export_tool.main(["--checkpoint", str(imported_checkpoint("bubbliiiing")), "--out", str(out)]) == 0
    assert ("input: RGB / 255, then (x - mean) / std with mean [0.0, 0.0, 0.0] and std [1.0, 1.0, 1.0]"
            in capsys.readouterr().out)
    metadata = export_module.onnx_session(out).get_modelmeta().custom_metadata_map
    assert json.loads(metadata["mean"]) == [0.0, 0.0, 0.0] and json.loads(metadata["std"]) == [1.0, 1.0, 1.0]
    names = json.loads(metadata["class_names"])
    assert len(names) == 21 and names[:2] == ["background", "aeroplane"]
    assert metadata["input"] == export_module.INPUT_DESCRIPTION


@pytest.mark.parametrize(("size", "declared"), [([], ["batch", 3, "height", "width"]),
                                              (["--input-size", "33", "47"], ["batch", 3, 33, 47])])
def test_the_onnx_file_declares_the_class_count_and_a_fixed_size_of_its_logits(
        size: list[str], declared: list, tmp_path: Path, make_checkpoint) -> None:
    """Not the exporter's names of an inner resize's dimensions, which hid them from a deployment reading the
    graph's signature."""
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    assert export_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.onnx"), *size]) == 0
    assert export_module.onnx_session(tmp_path / "m.onnx").get_outputs()[0].shape == declared


def test_export_tool_reports_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = export_tool.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")])
    assert code == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_existing_out_is_refused_before_any_work_unless_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  make_checkpoint) -> None:
    ckpt, notes = tmp_path / "best.pt", tmp_path / "notes.txt"
    make_checkpoint(ckpt, num_classes=3)
    notes.write_text("a user's file")
    checkpoint_bytes = ckpt.read_bytes()
    taken = "exists and this run did not write it; choose another --out or pass --overwrite"
    for out, flags, words in ((notes, [], taken), (ckpt, [], "is the --checkpoint file"),
                              (ckpt, ["--overwrite"], "is the --checkpoint file")):
        assert export_tool.main(["--checkpoint", str(ckpt), "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: {words}") and len(err.strip().splitlines()) == 1, err
    assert notes.read_text() == "a user's file" and ckpt.read_bytes() == checkpoint_bytes
    assert export_tool.main(["--checkpoint", str(ckpt), "--out", str(notes), "--overwrite"]) == 0
    assert notes.read_bytes()[:1] == b"\x08"  # an ONNX model now, as asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "notes.txt"]  # no side or temporary files


def test_an_out_ending_in_a_slash_is_refused_instead_of_written_as_a_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    out = f"{tmp_path / 'exports'}/"  # meant as a folder to export into
    assert export_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--out", out]) == 2
    assert capsys.readouterr().err == f"error: {out}: names a folder (it ends in '/'); --out names the file to write\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_out_to_stdout_redirected_to_a_file_keeps_the_report_out_of_the_model(tmp_path: Path, repo_root: Path,
                                                                              make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    with open(tmp_path / "model.onnx", "wb") as stdout:  # export.py --out /dev/stdout > model.onnx
        done = subprocess.run([sys.executable, str(repo_root / "tools" / "export.py"), "--checkpoint",
                               str(tmp_path / "best.pt"), "--out", "/dev/stdout"], stdout=stdout,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    export_module.onnx_session(tmp_path / "model.onnx")  # the model alone: it loads
    assert done.returncode == 0 and "argmax agreement 100.0000%" in done.stderr


def test_a_failed_export_keeps_the_previous_file_and_leaves_no_partial_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make_checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    (tmp_path / "model.onnx").write_bytes(b"the previous export")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "parity_check", ctrl_c)
    args = ["--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "model.onnx"), "--overwrite"]
    assert export_tool.main(args) == 130
    assert (tmp_path / "model.onnx").read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "model.onnx"]


def test_an_input_size_beyond_memory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    # 1.2 PB for the example input alone: more than any machine's address space, so the allocation always fails.
    args = ["--checkpoint", str(tmp_path / "best.pt"), "--out", str(tmp_path / "m.onnx"),
            "--input-size", "10000000", "10000000"]
    assert export_tool.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --input-size 10000000 10000000: does not fit in memory (an allocation of ")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(("project", "size", "smallest"), [("vainf", "2", 3), (None, "0", 1)])
def test_an_input_size_the_model_cannot_take_is_one_line(project: str | None, size: str, smallest: int,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         make_checkpoint, imported_checkpoint) -> None:
    """VainF's unpadded 3x3 stem needs 3 pixels a side; our networks take any positive size."""
    checkpoint = imported_checkpoint(project) if project else tmp_path / "best.pt"
    if not project:
        make_checkpoint(checkpoint, num_classes=3)
    args = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--input-size", size, "40"]
    assert export_tool.main(args) == 2
    assert capsys.readouterr().err == (f"error: --input-size: height and width must be at least {smallest} for this "
                                       f"model, got [{size}, 40]\n")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_torch_cannot_take_is_one_line_before_any_work(seed: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.onnx"
    assert export_tool.main(["--checkpoint", str(tmp_path / "absent.pt"), "--out", str(out), "--seed", seed]) == 2
    assert capsys.readouterr().err == f"error: --seed: must lie between 0 and {2**64 - 1}, got {seed}\n"
    assert not out.exists()


def test_the_onnx_file_given_as_checkpoint_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            make_checkpoint) -> None:
    make_checkpoint(tmp_path / "best.pt", num_classes=3)
    onnx_file = tmp_path / "exported"  # no suffix: recognised by its contents
    assert export_tool.main(["--checkpoint", str(tmp_path / "best.pt"), "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    assert export_tool.main(["--checkpoint", str(onnx_file), "--out", str(tmp_path / "again.onnx")]) == 2
    assert capsys.readouterr().err == (f"error: {onnx_file}: not a PyTorch checkpoint (an ONNX model; pass the .pt "
                                       "file it was exported from)\n")
