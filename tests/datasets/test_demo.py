"""The built-in demo dataset: reproducible, idempotent, fast, loadable by VOCSegmentation."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datasets import DEMO_CLASSES, DataError, VOCSegmentation, demo, ensure_demo_dataset


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def timed_demo_root(tmp_path_factory) -> Path:
    """A fresh demo set whose generation must stay cheap."""
    start = time.process_time()  # CPU time, so a busy machine does not fail the budget
    root = ensure_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0)
    assert time.process_time() - start < 5.0
    return root


def test_same_seed_same_bytes_other_seed_differs(tmp_path, timed_demo_root):
    first = _snapshot(timed_demo_root)
    assert first == _snapshot(ensure_demo_dataset(tmp_path / "b", seed=0))
    other = _snapshot(ensure_demo_dataset(tmp_path / "c", seed=1))
    assert other.keys() == first.keys()
    images = [k for k in first if k.endswith(".jpg")]
    assert sum(first[k] != other[k] for k in images) == len(images) == 240


def test_idempotent_refuses_another_finished_demo_and_redoes_an_interrupted_one(tmp_path):
    root = ensure_demo_dataset(tmp_path, seed=3)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert ensure_demo_dataset(tmp_path, seed=3) == tmp_path
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    before = _snapshot(root)
    # Another seed or variant would destroy data checkpoints were trained on: refused, nothing touched.
    for kwargs, held in (({"seed": 4}, "demo, seed 3"), ({"variant": "demo-rare"}, "demo, seed 3")):
        with pytest.raises(DataError, match=f"{tmp_path}: holds the demo data {held}, generator version 1, not "):
            ensure_demo_dataset(tmp_path, **kwargs)
    assert _snapshot(root) == before
    # An interrupted write leaves an incomplete marker: the next call redoes the folder, with what it now asks for.
    marker = tmp_path / "demo_dataset.json"
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))
    (tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    ensure_demo_dataset(tmp_path, seed=4)
    assert json.loads(marker.read_text())["seed"] == 4
    assert _snapshot(root) != before
    # A finished folder that lost a split file is not silently rewritten either.
    (tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataError, match="lacks a split file"):
        ensure_demo_dataset(tmp_path, seed=4)


def test_loads_with_all_classes(timed_demo_root):
    train, val = VOCSegmentation(timed_demo_root, split="train"), VOCSegmentation(timed_demo_root, split="val")
    assert (len(train), len(val)) == (200, 40)
    assert train.class_names == list(DEMO_CLASSES) and train.num_classes == len(DEMO_CLASSES)
    counts = np.zeros(len(DEMO_CLASSES), np.int64)
    for ds in (train, val):
        for i in range(len(ds)):
            image, mask = ds[i]
            assert image.shape == (128, 128, 3) and mask.shape == (128, 128)
            counts += np.bincount(mask.ravel(), minlength=len(DEMO_CLASSES))
    fractions = counts / counts.sum()
    assert fractions[0] > 0.5 and (fractions[1:] > 0.02).all()  # every object class well represented
    assert not set(train.ids) & set(val.ids)


def test_a_marker_that_is_no_record_counts_as_an_interrupted_write(tmp_path):
    (tmp_path / "demo_dataset.json").write_text("[1]\n")
    ensure_demo_dataset(tmp_path, seed=2)
    assert json.loads((tmp_path / "demo_dataset.json").read_text())["seed"] == 2


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    with pytest.raises(DataError, match="VOCdevkit: exists and is not the demo dataset"):
        ensure_demo_dataset(tmp_path)
    assert not (tmp_path / "demo_dataset.json").exists()


def test_rare_variant_adds_a_small_class_on_a_tenth_of_a_percent_of_pixels(tmp_path):
    root = ensure_demo_dataset(tmp_path, variant="demo-rare")
    train = VOCSegmentation(root, split="train")
    assert train.class_names == [*DEMO_CLASSES, "diamond"] and len(VOCSegmentation(root, split="val")) == 100
    counts, holding = np.zeros(6, np.int64), 0
    for i in range(len(train)):
        found = np.bincount(train[i][1].ravel(), minlength=6)
        counts += found
        holding += found[5] > 0
    assert 0.0005 < counts[5] / counts.sum() < 0.002  # rare ...
    assert 30 < holding < 80 and counts[5] / holding < 100  # ... in a quarter of the images, and small
    assert json.loads((tmp_path / "demo_dataset.json").read_text())["variant"] == "demo-rare"
    with pytest.raises(DataError, match="demo variant 'demo-huge': choose one of demo, demo-rare"):
        ensure_demo_dataset(tmp_path / "x", variant="demo-huge")


def test_an_unwritable_demo_root_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match=r"file/demo: cannot write the demo data here \(.*\); pass --data-root"):
        ensure_demo_dataset(tmp_path / "file" / "demo")


def test_two_runs_asking_for_it_at_once_get_it_written_once(tmp_path, monkeypatch):
    write, writing, calls, results = demo._write_scenes, threading.Event(), [], {}

    def slow_write(*args) -> None:  # the first run is still writing when the second asks
        calls.append(args)
        writing.set()
        time.sleep(0.5)
        write(*args)

    def run(name: str) -> None:
        try:
            results[name] = ensure_demo_dataset(tmp_path / "demo")
        except DataError as exc:
            results[name] = exc

    monkeypatch.setattr(demo, "_write_scenes", slow_write)
    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert writing.wait(30)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join()
    second.join()
    assert results == {"first": tmp_path / "demo", "second": tmp_path / "demo"} and len(calls) == 1
    assert len(VOCSegmentation(tmp_path / "demo", split="train")) == 200
