"""The predict benchmark section runs every candidate on real files and reports rates with their spread."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from deeplab.benchmark.prediction import prediction_rows, write_photos, write_video


def test_photos_and_clip_have_the_promised_sizes(tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", 5)
    assert sorted({cv2.imread(str(p)).shape[:2] for p in photos}) == [(375, 500), (500, 375)]
    for size in (96, 32, 2):  # small clips too: their shapes shrink with the frame
        capture = cv2.VideoCapture(str(write_video(tmp_path / f"clip{size}.mp4", 4, size)))
        assert (capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FRAME_WIDTH)) == (4, size)


@pytest.mark.slow
def test_rows_cover_loop_pipeline_and_video(tmp_path: Path, make_checkpoint) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    rows = prediction_rows(size=64, warmup=0, repeats=2, checkpoints=[str(tmp_path / "m.pt")],
                           engine="onnxruntime", images=2, frames=3, batch_sizes=(2,))
    assert [row["candidate"] for row in rows] == [
        "folder, one at a time (decode, predict, write)", "folder, pipelined, batch 2",
        "video 64x64, frame by frame", "video 64x64, pipelined"]
    for row in rows:
        assert 0 < row["min"] <= row["median"] <= row["max"] and row["engine"] == "onnxruntime"
    assert rows[0]["vs_one_at_a_time"] == 1 and rows[2]["vs_one_at_a_time"] == 1


def test_int8_without_a_checkpoint_calibrates_on_the_photos() -> None:
    rows = prediction_rows(size=32, warmup=0, repeats=1, engine="int8", images=1, frames=2, batch_sizes=())
    assert {row["engine"] for row in rows} == {"int8"}
