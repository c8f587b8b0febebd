"""tools/benchmark.py: bad flags, an existing --json and a checkpoint whose classes differ from its data's are one
line and exit 2 before anything is timed; --json is written whole, and replaced only with --overwrite."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from deeplab.benchmark.engines import TrainedCheckpoint, load_trained
from tools import benchmark


@pytest.fixture
def untimed(monkeypatch):
    """Every section replaced by one that must not run: a refusal has to come before any timing."""
    def never(**kwargs):
        raise AssertionError("a section ran")

    for name in ("core_rows", "backbone_rows", "engine_rows", "prediction_rows"):
        monkeypatch.setattr(benchmark, name, never)


@pytest.mark.parametrize("flags, message", [
    (["--section", "core", "--repeats", "0"], "--repeats: must be at least 1, got 0"),
    (["--section", "core", "--warmup", "-1"], "--warmup: must be 0 or more, got -1"),
    (["--size", "0"], "--size: must be at least 1, got 0"),
    (["--size", "-5"], "--size: must be at least 1, got -5"),
    (["--threads", "0"], "--threads: must be at least 1, got 0"),
    (["--section", "engines", "--rounds", "0"], "--rounds: must be at least 1, got 0"),
    (["--section", "predict", "--images", "0"], "--images: must be at least 1, got 0"),
    (["--section", "predict", "--frames", "0"], "--frames: must be at least 1, got 0"),
    (["--section", "core", "--size", "100"], "--size 100: the core section times smp's DeepLabV3Plus, which needs "
                                             "a multiple of 16"),
    (["--section", "predict", "--size", "1"], "--size 1: the predict section's MPEG-4 clip needs at least 2x2"),
    (["--section", "core", "--section", "backbones", "--backbones", "mobilenet"],
     "--backbones: unknown backbone 'mobilenet'; did you mean"),
    (["--section", "core", "--section", "predict", "--checkpoint", "runs/typo.pt"], "runs/typo.pt: "),
    (["--section", "engines", "--checkpoint", "a.pt", "--data-root", "d1", "--data-root", "d2"],
     "--data-root d2: 2 --data-root for 1 --checkpoint; each names the data of the checkpoint in its position"),
])
def test_bad_flags_are_one_line_before_any_timing(flags, message, untimed, capsys):
    assert benchmark.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1


def test_json_is_new_unless_overwrite_and_its_folder_is_made(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "core_rows", lambda **kwargs: [{"model": "m", "latency_ms": 1.0}])
    kept = tmp_path / "kept.json"
    kept.write_text("mine")
    for target in (kept, tmp_path):
        assert benchmark.main(["--section", "core", "--json", str(target)]) == 2
        assert "--json" in capsys.readouterr().err
    assert kept.read_text() == "mine"
    assert benchmark.main(["--section", "core", "--json", str(kept), "--overwrite"]) == 0
    new = tmp_path / "new" / "rows.json"
    assert benchmark.main(["--section", "core", "--json", str(new)]) == 0
    for written in (kept, new):
        assert json.loads(written.read_text())["core"] == [{"model": "m", "latency_ms": 1.0}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "new"]  # no temporary file left


@pytest.fixture
def five_class_checkpoint_and_six_class_data(tmp_path, make_checkpoint, make_voc_folder):
    names = ["background", "a", "b", "c", "d"]
    make_checkpoint(tmp_path / "m.pt", names, num_classes=5)
    masks = {f"v{i}": np.full((24, 32), i, np.uint8) for i in range(6)}
    make_voc_folder(tmp_path / "data", masks, split="val", classes=[*names, "e"])
    return str(tmp_path / "m.pt"), str(tmp_path / "data")


def test_engines_refuse_data_of_other_classes_before_timing(five_class_checkpoint_and_six_class_data, untimed,
                                                            capsys):
    checkpoint, data = five_class_checkpoint_and_six_class_data
    assert benchmark.main(["--section", "engines", "--checkpoint", checkpoint, "--data-root", data]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint}: the checkpoint predicts 5 classes") and "has 6" in err


def test_data_without_a_val_split_is_one_line_before_timing(tmp_path, make_checkpoint, make_voc_folder, untimed,
                                                            capsys):
    make_checkpoint(tmp_path / "m.pt", num_classes=21)
    make_voc_folder(tmp_path / "data", {"t0": np.zeros((24, 32), np.uint8)}, split="train")
    assert benchmark.main(["--section", "engines", "--checkpoint", str(tmp_path / "m.pt"), "--data-root",
                           str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "val.txt: split file not found" in err and len(err.splitlines()) == 1


def test_ignore_class_names_scores_every_class_of_both(five_class_checkpoint_and_six_class_data):
    checkpoint, data = five_class_checkpoint_and_six_class_data
    trained = TrainedCheckpoint(checkpoint, data, ignore_class_names=True)
    (scores,) = trained.quality({"eager": trained.model}).values()
    assert scores["agreement data"] == 1.0 and 0 <= scores["miou data"] <= 1


def test_quality_scores_each_image_before_reading_the_next(five_class_checkpoint_and_six_class_data):
    """A whole VOC val split held as inputs and class maps at once would take gigabytes."""
    trained = TrainedCheckpoint(*five_class_checkpoint_and_six_class_data, ignore_class_names=True)
    samples, events = list(trained.val), []

    def reading():
        for sample in samples:
            events.append("read")
            yield sample

    def run(batch):
        events.append("run")
        return trained.model(batch)

    trained.val = reading()
    (scores,) = trained.quality({"eager": run}).values()
    assert events == ["read", "run"] * len(samples) and scores["agreement data"] == 1.0


def test_two_checkpoints_on_one_data_set_keep_their_own_columns(five_class_checkpoint_and_six_class_data, tmp_path,
                                                                 make_checkpoint, untimed, capsys):
    first, data = five_class_checkpoint_and_six_class_data
    second = str(tmp_path / "other.pt")
    make_checkpoint(second, ["background", "a", "b", "c", "d"], num_classes=5)
    trained = load_trained([first, second], [data, data], ignore_class_names=True)
    columns = [set(checkpoint.quality({"eager": checkpoint.model})["eager"]) for checkpoint in trained]
    assert columns == [{f"agreement {path} on {data}", f"miou {path} on {data}"} for path in (first, second)]
    assert benchmark.main(["--section", "engines", "--checkpoint", first, "--checkpoint", first, "--data-root", data,
                           "--data-root", data, "--ignore-class-names"]) == 2
    assert capsys.readouterr().err == f"error: --checkpoint {first}: given twice for the data root {data}\n"


def test_an_engine_this_machine_lacks_is_one_line_before_any_timing(untimed, monkeypatch, capsys):
    from deeplab.inference import engines

    monkeypatch.setattr(engines, "_installed", lambda package: package != "openvino")
    assert benchmark.main(["--section", "predict", "--engine", "openvino"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --engine openvino: engine 'openvino' needs openvino") and len(err.splitlines()) == 1


WITHOUT_TRAINING_IMAGES = """
import sys
from deeplab.benchmark import engines
from tools import benchmark
engines._peers = lambda: {engines.SMP_REFERENCE: lambda batch: batch}
engines._startup_rows = lambda trained, threads: []
sys.exit(benchmark.main(sys.argv[1:]))
"""


def test_a_checkpoint_without_its_training_images_is_measured_without_int8(five_class_checkpoint_and_six_class_data,
                                                                          tmp_path, repo_root):
    """In its own process: OpenVINO's engines, built and timed in the test process, left its heap damaged for later
    tests (a segfault decoding a subprocess's output two tests on)."""
    checkpoint, data = five_class_checkpoint_and_six_class_data  # written by no training run: no training images
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, "-c", WITHOUT_TRAINING_IMAGES, "--section", "engines", "--checkpoint",
                           checkpoint, "--data-root", data, "--ignore-class-names", "--size", "32", "--warmup", "0",
                           "--repeats", "1", "--rounds", "1", "--threads", "1", "--json", str(out)],
                          cwd=repo_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {row["model"]: row for row in json.loads(out.read_text())["engines"]}
    assert rows["ours onnxruntime (onnxruntime f32)"]["agreement data"] == 1.0
    assert not [name for name in rows if "int8" in name]
    assert "skipped engine int8: no calibration images" in done.stderr


def test_json_to_stdout_redirected_to_a_file_holds_the_rows_alone(tmp_path, repo_root):
    code = ("import sys; from tools import benchmark; benchmark.core_rows = lambda **kwargs: [{'model': 'm'}]; "
            "sys.exit(benchmark.main(['--section', 'core', '--json', '/dev/stdout']))")
    with open(tmp_path / "rows.json", "wb") as stdout:  # benchmark.py --json /dev/stdout > rows.json
        done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, stdout=stdout, stderr=subprocess.PIPE,
                              text=True)
    assert json.loads((tmp_path / "rows.json").read_text())["core"] == [{"model": "m"}]
    assert done.returncode == 0 and "## core" in done.stderr


def test_a_size_beyond_memory_is_one_line(capsys):
    # 1.2 PB for the input alone: more than any machine's address space, so the allocation always fails.
    assert benchmark.main(["--section", "core", "--size", "10000000", "--repeats", "1", "--warmup", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --size 10000000: the core section does not fit in memory (an allocation of ")
    assert len(err.strip().splitlines()) == 1
