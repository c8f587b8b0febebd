"""Batched, pipelined prediction: the same masks as one predict() call per image, in input order, with
undecodable files reported in place and write failures stopping the run."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab.inference import Predictor
from deeplab.inference.pipeline import prefetch, segment_files, segment_stream
from deeplab.inference.predictor import default_batch_size


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, make_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    make_checkpoint(path, ["a", "b", "c", "d"], num_classes=4, varied=True)
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", engine="onnxruntime", max_size=48)


def random_images(sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


# Two sizes alternating, one odd size, one shrunk by max_size=48 to the same model size as 30x40.
SIZES = [(30, 40), (40, 30), (30, 40), (33, 47), (40, 30), (60, 80), (30, 40)]


# Eager torch builds kernels per new shape and batch size: slow on 2 cores, so the quick loop checks ONNX Runtime.
@pytest.mark.parametrize("engine", [pytest.param("torch", marks=pytest.mark.slow), "onnxruntime"])
def test_predict_batch_equals_one_call_per_image(checkpoint: Path, engine: str) -> None:
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", engine=engine, max_size=48)
    images = random_images(SIZES)
    batched = predictor.predict_batch(images)
    assert len(batched) == len(images)
    for image, prediction in zip(images, batched):
        single = predictor.predict(image)
        assert prediction.model_size == single.model_size
        np.testing.assert_array_equal(prediction.mask, single.mask)
        assert prediction.mask.shape == image.shape[:2]
    assert batched[5].model_size == (36, 48)  # 60x80 shrunk to max_size 48
    assert all(len(np.unique(p.mask)) > 1 for p in batched)  # several classes: equality is not trivial


def write_folder(folder: Path, images: list[np.ndarray]) -> list[Path]:
    folder.mkdir()
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"img{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pipelined_folder_equals_the_one_at_a_time_loop(predictor: Predictor, tmp_path: Path, batch_size: int) -> None:
    images = random_images(SIZES)
    paths = write_folder(tmp_path / "in", images)
    (tmp_path / "in" / "broken.png").write_text("not an image")
    paths.insert(2, tmp_path / "in" / "broken.png")
    writer_threads = set()

    def write(path: Path, image: np.ndarray, prediction) -> str:
        writer_threads.add(threading.current_thread().name)
        return f"{path.stem}:{image.shape[0]}x{image.shape[1]}"

    results = list(segment_files(predictor, paths, write, batch_size=batch_size))
    assert [r.key for r in results] == paths  # input order, the broken file in its place
    assert "broken.png" in results[2].error and results[2].prediction is None
    good = [r for r in results if r.error is None]
    for result, image in zip(good, images):
        np.testing.assert_array_equal(result.prediction.mask, predictor.predict(image).mask)
        assert result.written == f"{result.key.stem}:{image.shape[0]}x{image.shape[1]}"
        assert result.image_size == image.shape[:2]
    assert writer_threads and threading.current_thread().name not in writer_threads


def test_a_write_failure_stops_the_run(predictor: Predictor, tmp_path: Path) -> None:
    paths = write_folder(tmp_path / "in", random_images([(20, 24)] * 5))
    written = []

    def write(path: Path, image: np.ndarray, prediction) -> None:
        if path.stem == "img2":
            raise OSError("disk full")
        written.append(path.stem)

    with pytest.raises(OSError, match="disk full"):
        list(segment_files(predictor, paths, write, batch_size=2))
    assert written[:2] == ["img0", "img1"] and "img2" not in written


def test_prefetch_keeps_order_reraises_and_stops_early() -> None:
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("bad item 2")

    got = []
    with pytest.raises(ValueError, match="bad item 2"):
        for item in prefetch(failing(), depth=2):
            got.append(item)
    assert got == [1]
    produced = []

    def counting():
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(counting(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert len(produced) < 10  # the producer stopped instead of running to the end


def test_batch_size_is_checked_and_defaults_follow_the_engine(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(segment_stream(predictor, [], lambda *a: None, batch_size=0))
    assert default_batch_size("onnxruntime", "cpu") == 1 and default_batch_size("int8", "cpu") == 4
    assert default_batch_size("torch-bf16", "cuda") == 8
    assert predictor.batch_size == 1 and predictor.engine_name == "onnxruntime"
