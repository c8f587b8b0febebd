"""Checkpoints: atomic writes, weights_only reads, clear errors, models rebuilt from the config alone."""
from __future__ import annotations

import errno
import io
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import safetensors.torch
import torch
from PIL import Image

from deeplab import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from deeplab.checkpoint import match_class_names, newest_checkpoint
from deeplab.errors import UserError


def _state(num_classes: int = 3) -> dict:
    model = build_model(num_classes=num_classes, width_mult=0.35)
    return {"model": model.state_dict(), "model_config": model.config, "step": 5, "class_names": ["a", "b", "c"]}


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(state, tmp_path / "sub" / "last.pt")
    ckpt = load_checkpoint(tmp_path / "sub" / "last.pt")
    model = model_from_checkpoint(ckpt).eval()
    reference = build_model(**state["model_config"])
    reference.load_state_dict(state["model"])
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
    assert ckpt["step"] == 5 and not list(tmp_path.glob("sub/.*.tmp"))


def test_numpy_numbers_and_paths_are_saved_as_plain_data_and_other_objects_refused(tmp_path: Path) -> None:
    masks = np.array([[0, 2], [1, 1]], dtype=np.uint8)
    model = build_model(num_classes=masks.max() + 1, width_mult=np.float64(0.35))  # numpy numbers in model.config
    save_checkpoint({"model": model.state_dict(), "model_config": model.config, "source": tmp_path / "data",
                     "lr": [np.float32(0.5)]}, tmp_path / "last.pt")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["model_config"]["num_classes"] == 3 and type(ckpt["model_config"]["num_classes"]) is int
    assert (ckpt["source"], ckpt["lr"]) == (str(tmp_path / "data"), [0.5])
    model_from_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"^checkpoint\['weights'\]: numpy.ndarray is not plain data .*from_numpy"):
        save_checkpoint({"weights": np.ones(3)}, tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod."])
def test_weights_of_a_compiled_or_ddp_wrapped_model_load(tmp_path: Path, prefix: str) -> None:
    """``torch.compile(model).state_dict()`` names every key ``_orig_mod.*``: 'weights do not match'."""
    state = _state()
    save_checkpoint({**state, "model": {prefix + key: value for key, value in state["model"].items()}},
                    tmp_path / "compiled.pt")
    model = model_from_checkpoint(load_checkpoint(tmp_path / "compiled.pt")).eval()
    reference = build_model(**state["model_config"])
    reference.load_state_dict(state["model"])
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))


def test_save_sweeps_leftovers_of_killed_saves(tmp_path: Path) -> None:
    leftover = tmp_path / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    save_checkpoint(_state(), tmp_path / "last.pt")
    assert not leftover.exists()
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_state(), path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left"):
        save_checkpoint(_state(), path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_ctrl_c_during_a_write_is_an_interrupt_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_state(), path)
    before = path.read_bytes()

    def interrupted_save(obj, f):  # what torch.save does when Ctrl-C lands mid-write: its zip writer's error
        f.write(b"partial")
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 13874816 vs 13874704")

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(), path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


CTRL_C_IN_TORCH_SAVE = """
import sys, torch
from deeplab import save_checkpoint
def interrupted_save(obj, f):  # Ctrl-C between two records: torch.save's zip writer is left unfinished
    writer = torch._C.PyTorchFileWriter(f, True, 64)
    writer.write_record("archive/version", b"3", 1)
    raise KeyboardInterrupt
torch.save = interrupted_save
try:
    save_checkpoint({"model": {"w": torch.zeros(3)}}, sys.argv[1])
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_inside_torch_save_leaves_no_writer_to_abort_the_exit(tmp_path: Path, repo_root: Path) -> None:
    """The unfinished zip writer is freed while its temporary file is open, not at exit into the closed file (a C++
    terminate: exit status -6 instead of the tool's 130)."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_TORCH_SAVE, str(tmp_path / "last.pt")], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "interrupted\n"), done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("protocol", [0, 2])  # protocol 0 is plain ASCII text, yet still a pickle of code
def test_refuses_pickled_code(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Exploit(), "model_config": {}}, f, protocol=protocol)
    with pytest.raises(UserError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == (f"{path}: not a readable checkpoint (it holds Python objects, not plain data, and "
                                  "loading it could run code; refused)")
    assert not marker.exists()


def _tiny_onnx_model() -> bytes:
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    return onnx.helper.make_model(graph).SerializeToString()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def _archived(kind: str) -> bytes:
    """A checkpoint packed to be sent, as best.pt inside a zip or tar archive."""
    checkpoint, buffer = io.BytesIO(), io.BytesIO()
    torch.save(_state(), checkpoint)
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("best.pt", checkpoint.getvalue())
    else:
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            member = tarfile.TarInfo("best.pt")
            member.size = len(checkpoint.getvalue())
            archive.addfile(member, io.BytesIO(checkpoint.getvalue()))
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("model.onnx", _tiny_onnx_model, "an ONNX model; pass the .pt file it was exported from"),
    ("best.zip", lambda: _archived("zip"), "a zip archive of best.pt; unpack it first"),
    ("best.pt", lambda: _archived("tar"), "a tar archive of best.pt; unpack it first"),
    ("model.safetensors", lambda: safetensors.torch.save({"w": torch.zeros(2)}),
     "safetensors weights alone, without the model_config that rebuilds the model; tools/import_checkpoint.py "
     "converts a VainF or bubbliiiing file"),
    ("model.bin", _tiny_onnx_model, "an ONNX model; pass the .pt file it was exported from"),
    ("curves.png", _png, "a PNG image"),
    ("photo.pt", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF", "a JPEG image"),
    ("val.json", lambda: b'{"miou": 0.5}\n', "a JSON file"),
    ("not.pt", lambda: b"hi\n", "a text file"),
    ("empty.pt", lambda: b"", "an empty file"),
    ("noise.pt", lambda: bytes(range(256)), "not a zip or pickle file"),
])
def test_files_that_are_no_checkpoint_are_named_for_what_they_are(tmp_path: Path, name: str, content,
                                                                  kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(UserError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == f"{path}: not a PyTorch checkpoint ({kind})"


def test_our_models_bare_state_dict_says_how_to_save_a_checkpoint(tmp_path: Path) -> None:
    """torch.save(model.state_dict()), PyTorch's habit, was told to convert a VainF or bubbliiiing file."""
    model = build_model(num_classes=3, width_mult=0.25)
    for prefix in ("", "_orig_mod."):
        torch.save({prefix + key: value for key, value in model.state_dict().items()}, tmp_path / "weights.pt")
        with pytest.raises(UserError) as refused:
            load_checkpoint(tmp_path / "weights.pt")
        assert str(refused.value).startswith(f"{tmp_path / 'weights.pt'}: the weights of this project's own "
                                             "DeepLabV3+ without the model_config that rebuilds it, so the model "
                                             "cannot be rebuilt; load them into the model they came from and save "
                                             "it with deeplab.save_checkpoint({'model': model.state_dict(), "
                                             "'model_config': model.config}, PATH)")


def test_a_model_with_more_classes_than_masks_hold_is_refused(tmp_path: Path) -> None:
    for num_classes in (255, 256):
        model = build_model(num_classes=num_classes, width_mult=0.35)
        save_checkpoint({"model": model.state_dict(), "model_config": model.config}, tmp_path / f"{num_classes}.pt")
    assert load_checkpoint(tmp_path / "255.pt")["model_config"]["num_classes"] == 255
    with pytest.raises(UserError) as refused:
        load_checkpoint(tmp_path / "256.pt")
    assert str(refused.value) == (f"{tmp_path / '256.pt'}: its model predicts 256 classes, but masks hold at most 255 "
                                  "(8-bit class ids, 255 = void)")


@pytest.mark.parametrize("content", [b"", b"garbage bytes", None])
def test_corrupt_or_truncated(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        save_checkpoint(_state(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match="bad.pt"):
        load_checkpoint(path)


def test_unreadable_checkpoint_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.pt"
    torch.save(_state(), path)

    def denied(self: Path) -> bytes:  # what a file of another user reads as (root reads anything)
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(UserError, match=r"locked.pt: cannot read checkpoint \(Permission denied\)$"):
        load_checkpoint(path)


def test_missing_keys_and_mismatched_weights(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    save_checkpoint(_state(), tmp_path / "run" / "best.pt")  # the run folder given for its checkpoint
    with pytest.raises(UserError, match=r"run: is a folder, not a checkpoint file; pass one of the checkpoints in it "
                                        r"\(best.pt\)$"):
        load_checkpoint(tmp_path / "run")
    path = tmp_path / "nokeys.pt"
    torch.save({"step": 1}, path)
    with pytest.raises(UserError, match="model_config"):
        load_checkpoint(path)
    state = _state(num_classes=3)
    state["model_config"] = {**state["model_config"], "num_classes": 5}
    with pytest.raises(UserError, match="do not match"):
        model_from_checkpoint(state, "mixed.pt")


def test_newest_checkpoint_is_the_latest_best(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no best.pt found.*tools/train.py"):
        newest_checkpoint(tmp_path / "runs")
    for name, mtime in (("new", 2_000_000_000), ("old", 1_000_000_000)):
        path = tmp_path / "runs" / name / "best.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    assert newest_checkpoint(tmp_path / "runs") == tmp_path / "runs" / "new" / "best.pt"


def torch_style_disk_full(*args, **kwargs):
    """What torch.save does on a full disk: a RuntimeError raised while handling the write's OSError."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


def test_disk_full_says_whether_a_previous_checkpoint_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(_state(), tmp_path / "last.pt")
    monkeypatch.setattr(torch, "save", torch_style_disk_full)
    with pytest.raises(UserError) as kept:
        save_checkpoint(_state(), tmp_path / "last.pt")
    assert str(kept.value) == f"{tmp_path / 'last.pt'}: cannot write checkpoint (No space left on device); the previous one is kept"
    with pytest.raises(UserError) as first:
        save_checkpoint(_state(), tmp_path / "best.pt")
    assert str(first.value) == f"{tmp_path / 'best.pt'}: cannot write checkpoint (No space left on device)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_truncated_checkpoint_message_ends_on_a_whole_word(tmp_path: Path) -> None:
    path = tmp_path / "cut.pt"
    save_checkpoint(_state(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception) as raw:
        torch.load(path, weights_only=True)
    with pytest.raises(UserError) as ours:
        load_checkpoint(path)
    message = str(ours.value)
    assert message.startswith(f"{path}: not a readable checkpoint (truncated or damaged: ") and len(message) < 300
    reason = message.split("truncated or damaged: ", 1)[1].rstrip(")")
    assert reason and set(reason.replace(".", "").split()) <= set(str(raw.value).replace(".", "").split())


@pytest.mark.parametrize(("key", "value", "words"), [
    ("model", torch.zeros(3), "'model' is a Tensor, not a dict of named tensors"),
    ("model", {"w": "not a tensor"}, "'model' holds str 'not a tensor' under 'w', not a tensor"),
    ("mean", "0.5", "mean needs three finite numbers, one per RGB channel, got '0.5'"),
    ("std", [0.2, 0.0, 0.2], "std must be positive, got [0.2, 0.0, 0.2]"),
    ("mean", [123.675, 116.28, 103.53], "mean [123.675, 116.28, 103.53] is not of pixels scaled to [0, 1]"),
    ("class_names", "abc", "'class_names' is str 'abc', not a list of names"),
    ("class_names", ["a", "b"], "'class_names' has 2 names, but its 'model_config' predicts 3 classes"),
    ("args", [1], "'args' is list [1], not a dict of training settings"),
])
def test_checkpoints_of_the_wrong_shape_are_one_line(tmp_path: Path, key: str, value, words: str) -> None:
    state = _state()
    state[key] = value
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(UserError) as refused:
        load_checkpoint(tmp_path / "odd.pt")
    assert str(refused.value).startswith(f"{tmp_path / 'odd.pt'}: not a checkpoint of this project (")
    assert words in str(refused.value)


def test_class_names_of_checkpoint_and_data_must_agree(tmp_path: Path) -> None:
    ckpt = _state(num_classes=3)  # class names a, b, c
    assert match_class_names("m.pt", ckpt, ["a", "b", "c"], data_root=tmp_path) == ["a", "b", "c"]
    with pytest.raises(UserError) as renamed:
        match_class_names("m.pt", ckpt, ["a", "x", "c"], data_root=tmp_path)
    assert str(renamed.value) == (f"m.pt: class 1 is 'b' in the checkpoint but 'x' in {tmp_path} (VOC's classes, no "
                                  "classes.txt) (1 of 3 names differ); pass --ignore-class-names if the ids mean the "
                                  "same classes")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"m.pt: the checkpoint predicts 3 classes \(a, b, c\) but .*classes.txt has 2"):
        match_class_names("m.pt", ckpt, ["a", "b"], data_root=tmp_path)
    (tmp_path / "classes.txt").rename(tmp_path / "labelmap.txt")  # a CVAT export's names: said as their source
    with pytest.raises(UserError, match=r"m.pt: the checkpoint predicts 3 classes \(a, b, c\) but .*labelmap.txt has 2"):
        match_class_names("m.pt", ckpt, ["a", "b"], data_root=tmp_path)
    # The user says the ids agree: the data's names, then the checkpoint's beyond them.
    assert match_class_names("m.pt", ckpt, ["a", "x"], data_root=tmp_path, allow_mismatch=True) == ["a", "x", "c"]
    # A checkpoint's name beyond the data's that the data gives another id stays apart: scores are keyed by name.
    assert match_class_names("m.pt", ckpt, ["c", "a"], data_root=tmp_path,
                             allow_mismatch=True) == ["c", "a", "c (id 2)"]
    del ckpt["class_names"]  # a checkpoint without names: only the count can be checked
    assert match_class_names("m.pt", ckpt, ["p", "q", "r"], data_root=tmp_path) == ["p", "q", "r"]


def test_write_atomically_writes_through_a_symlink_and_into_a_device(tmp_path: Path) -> None:
    from deeplab.checkpoint import write_atomically

    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    write_atomically(link, lambda handle: handle.write(b"new"), what="ONNX model")
    assert link.is_symlink() and target.read_bytes() == b"new"
    write_atomically(os.devnull, lambda handle: handle.write(b"gone"), what="JSON")
    assert Path(os.devnull).exists() and not Path(os.devnull).is_file()  # still the device, not a file
