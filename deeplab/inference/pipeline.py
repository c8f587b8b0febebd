"""Many images through one predictor at speed: decoding and writing run on background threads while the
engine works, and images of one size are batched. Results come back in input order, equal to one
:meth:`~deeplab.inference.Predictor.predict` call per image."""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from datasets import DataError, read_rgb

from .predictor import Prediction, Predictor

__all__ = ["ImageResult", "prefetch", "segment_files", "segment_stream"]

Key = TypeVar("Key")
Written = TypeVar("Written")
Item = TypeVar("Item")

_DONE = object()


@dataclass(frozen=True)
class ImageResult(Generic[Key, Written]):
    """One input's outcome: what ``write`` returned for it, or the one-line reason it could not be decoded."""

    key: Key
    written: Written | None = None
    prediction: Prediction | None = None
    image_size: tuple[int, int] | None = None
    error: str | None = None


def prefetch(items: Iterable[Item], depth: int) -> Iterator[Item]:
    """``items``, produced on a background thread up to ``depth`` ahead (decoding overlaps the caller's work).

    An exception raised while producing is re-raised here, at the item where it happened; leaving the loop early
    stops the thread at its next item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
            buffer.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
            buffer.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get(timeout=0.05)
            except queue.Empty:
                pass


def segment_stream(
    predictor: Predictor,
    images: Iterable[tuple[Key, np.ndarray | str]],
    write: Callable[[Key, np.ndarray, Prediction], Written],
    *,
    batch_size: int = 1,
) -> Iterator[ImageResult[Key, Written]]:
    """Predict ``(key, image)`` pairs in batches of ``batch_size`` and ``write(key, image, prediction)`` each on a
    background thread; yields one :class:`ImageResult` per pair, in order, once its writing is done.

    A pair whose image is a string (a decoding error) passes through as an error result. ``write`` runs on one
    thread, in input order (a video writer needs that); an exception it raises propagates here.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pending: deque[Future] = deque()
    items = iter(images)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write") as writer:
        try:
            while chunk := list(islice(items, batch_size)):
                decoded = [(key, image) for key, image in chunk if not isinstance(image, str)]
                predictions = iter(predictor.predict_batch([image for _, image in decoded]))
                for key, image in chunk:
                    if isinstance(image, str):
                        pending.append(_finished(ImageResult(key, error=image)))
                    else:
                        pending.append(writer.submit(_write_one, write, key, image, next(predictions)))
                while len(pending) > batch_size:  # at most one batch waits to be written: memory stays bounded
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def segment_files(
    predictor: Predictor,
    paths: Sequence[Path],
    write: Callable[[Path, np.ndarray, Prediction], Written],
    *,
    batch_size: int = 1,
) -> Iterator[ImageResult[Path, Written]]:
    """:func:`segment_stream` over image files decoded on a background thread; an undecodable file, or an image
    too small for the model, becomes an error result naming it, the others go on."""
    return segment_stream(predictor, prefetch(((path, _decode(path, predictor)) for path in paths), 2 * batch_size),
                          write, batch_size=batch_size)


def _decode(path: Path, predictor: Predictor) -> np.ndarray | str:
    try:
        image = read_rgb(path)
        predictor.check_size(image, path)
    except DataError as exc:
        return str(exc)
    return image


def _write_one(write: Callable, key, image: np.ndarray, prediction: Prediction) -> ImageResult:
    return ImageResult(key, write(key, image, prediction), prediction, image.shape[:2])


def _finished(result: ImageResult) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future
