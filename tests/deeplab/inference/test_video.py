"""Videos: the overlay keeps frame count, size and frame rate, masks equal per-frame image predictions, and
truncated, corrupt, empty or undecodable files end in one line naming the file (and the frame)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deeplab.errors import UserError
from deeplab.inference import Predictor, overlay
from deeplab.inference.video import (
    VideoError,
    VideoInfo,
    ends_early,
    probe_video,
    read_frames,
    segment_video,
    split_videos,
)

FPS, WIDTH, HEIGHT = 12.0, 48, 40


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory, make_checkpoint) -> Predictor:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    make_checkpoint(path, ["background", "a", "b", "c"], num_classes=4, varied=True)
    return Predictor.from_checkpoint(path, device="cpu", engine="onnxruntime")


def make_clip(path: Path, frames: int, fourcc: str = "mp4v") -> Path:
    """A clip of coloured squares sliding over noise (so masks differ between frames)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for index in range(frames):
        frame = rng.integers(0, 80, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame[5:25, 3 * index % WIDTH : 3 * index % WIDTH + 15] = (200, 40, 40)
        writer.write(frame)
    writer.release()
    return path


def count_frames(path: Path) -> tuple[int, float, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    frames = 0
    while capture.read()[0]:
        frames += 1
    fps, size = capture.get(cv2.CAP_PROP_FPS), (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                                int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    return frames, fps, size


@pytest.mark.parametrize(("suffix", "fourcc", "batch_size"), [(".mp4", "mp4v", 1), (".avi", "MJPG", 4),
                                                              (".mkv", "XVID", 3)])
def test_round_trip_keeps_frames_size_fps_and_per_frame_masks(predictor: Predictor, tmp_path: Path, suffix: str,
                                                              fourcc: str, batch_size: int) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", 10, fourcc)
    ticks = []
    result = segment_video(predictor, clip, tmp_path / "clip_overlay.mp4", masks_dir=tmp_path / "clip_masks",
                           batch_size=batch_size, on_frame=lambda: ticks.append(1))
    assert result.frames == 10 and len(ticks) == 10 and result.info.frames == 10
    assert count_frames(tmp_path / "clip_overlay.mp4") == (10, FPS, (WIDTH, HEIGHT))
    masks = sorted((tmp_path / "clip_masks").iterdir())
    assert [m.name for m in masks] == [f"{i:06d}.png" for i in range(1, 11)]
    frames = list(read_frames(clip))
    assert len(frames) == 10
    for frame, mask_path in zip(frames, masks):
        mask = Image.open(mask_path)
        assert mask.mode == "P"
        np.testing.assert_array_equal(np.asarray(mask), predictor.predict(frame).mask)
    assert len({np.asarray(Image.open(m)).tobytes() for m in masks}) > 1  # the sliding square changes the masks


def test_webm_output_for_browsers(predictor: Predictor, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 4)
    segment_video(predictor, clip, tmp_path / "clip.webm")
    assert count_frames(tmp_path / "clip.webm")[0] == 4
    with pytest.raises(Exception, match="cannot write videos ending '.gif'"):
        segment_video(predictor, clip, tmp_path / "clip.gif")


def test_truncated_video_keeps_a_playable_overlay_and_names_the_frame(predictor: Predictor, tmp_path: Path) -> None:
    whole = make_clip(tmp_path / "whole.avi", 30, "MJPG").read_bytes()
    (tmp_path / "cut.avi").write_bytes(whole[: len(whole) * 6 // 10])
    with pytest.raises(VideoError) as caught:
        segment_video(predictor, tmp_path / "cut.avi", tmp_path / "cut_overlay.mp4", masks_dir=tmp_path / "masks")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'cut.avi'}: frame ")
    failed = int(re.search(r"frame (\d+) of 30 could not be decoded", message).group(1))
    assert 5 < failed < 30
    assert count_frames(tmp_path / "cut_overlay.mp4")[0] == failed - 1  # the frames before it, playable
    assert len(list((tmp_path / "masks").iterdir())) == failed - 1


def test_corrupt_middle_names_the_frame(predictor: Predictor, tmp_path: Path) -> None:
    data = bytearray(make_clip(tmp_path / "whole.mkv", 30, "XVID").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / "mid.mkv").write_bytes(bytes(data))
    with pytest.raises(VideoError, match=r"mid.mkv: frame \d+ of 30 could not be decoded"):
        segment_video(predictor, tmp_path / "mid.mkv", tmp_path / "mid_overlay.mp4")


def test_empty_and_undecodable_videos_are_one_line(predictor: Predictor, tmp_path: Path, capfd) -> None:
    make_clip(tmp_path / "empty.avi", 0, "MJPG")
    with pytest.raises(VideoError, match="empty.avi: video holds no frames$"):
        segment_video(predictor, tmp_path / "empty.avi", tmp_path / "empty_overlay.mp4")
    assert not (tmp_path / "empty_overlay.mp4").exists()  # no empty file left behind
    unknown = make_clip(tmp_path / "clip.avi", 3, "MJPG").read_bytes().replace(b"MJPG", b"ZZZZ")
    (tmp_path / "codec.avi").write_bytes(unknown)
    (tmp_path / "text.mp4").write_text("not a video")
    for name in ("codec.avi", "text.mp4", "absent.mov"):
        with pytest.raises(VideoError, match=re.escape(name)) as caught:
            probe_video(tmp_path / name)
        assert "\n" not in str(caught.value)
    with pytest.raises(VideoError, match="cannot open as a video"):
        segment_video(predictor, tmp_path / "codec.avi", tmp_path / "codec_overlay.mp4")
    # Nor OpenCV's own log lines beside ours (FFmpeg's are silenced where the process first opens a video).
    assert not re.search(r"\[ ?(WARN|ERROR)", capfd.readouterr().err)


def test_names_that_are_not_utf8_are_one_line_not_a_crash(predictor: Predictor, tmp_path: Path) -> None:
    """Linux allows any bytes in a name (files from old archives); OpenCV's binding crashes the process on them."""
    clip = make_clip(tmp_path / "clip.mp4", 2)
    latin1 = Path(os.fsdecode(bytes(tmp_path / "caf") + b"\xe9.mp4"))
    try:
        latin1.write_bytes(clip.read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(VideoError, match="the name is not valid UTF-8"):
        probe_video(latin1)
    with pytest.raises(VideoError, match="the name is not valid UTF-8"):
        segment_video(predictor, clip, latin1.with_name(latin1.stem + "_overlay.mp4"))


def write_frames(path: Path, frames: list[np.ndarray]) -> Path:
    """An MJPG .avi of RGB ``frames`` (MJPG takes any size, odd and 1-pixel sides too)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), FPS, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_odd_sizes_keep_every_pixel_and_pad_one_edge_copy(predictor: Predictor, tmp_path: Path,
                                                           suffix: str) -> None:
    ramp = np.linspace(0, 255, 17, dtype=np.float32)  # smooth, so the lossy codecs keep it close
    frame = np.broadcast_to(np.stack([ramp, ramp[::-1], np.full(17, 90.0)], -1)[None], (33, 17, 3)).astype(np.uint8)
    clip = write_frames(tmp_path / "odd.avi", [frame] * 3)
    segment_video(predictor, clip, tmp_path / f"odd{suffix}", masks_dir=tmp_path / "masks")
    [decoded] = list(read_frames(clip))[:1]
    expected = overlay(decoded, predictor.predict(decoded).mask, class_names=predictor.class_names).astype(float)
    written = next(read_frames(tmp_path / f"odd{suffix}")).astype(float)
    assert written.shape == (34, 18, 3) and np.asarray(Image.open(tmp_path / "masks" / "000001.png")).shape == (33, 17)
    assert np.abs(written[:33, :17] - expected).mean() < 12  # the picture itself, not shifted or rescaled
    assert np.abs(written[33, :17] - expected[32]).mean() < 12  # the padded row and column copy the edge
    assert np.abs(written[:33, 17] - expected[:, 16]).mean() < 12


@pytest.mark.parametrize(("suffix", "too_small", "smallest"), [(".mp4", [(64, 1), (1, 1)], [(2, 2), (64, 2)]),
                                                              (".webm", [(2, 2), (4, 4), (3, 5)], [(2, 14), (4, 8)])])
def test_frames_too_small_to_encode_are_one_line_and_the_smallest_others_play(
        predictor: Predictor, tmp_path: Path, suffix: str, too_small: list, smallest: list) -> None:
    for width, height in too_small:
        clip = write_frames(tmp_path / "tiny.avi", [np.full((height, width, 3), 100, np.uint8)] * 2)
        refusal = rf"tiny.avi: frames of {width}x{height} pixels are too small to encode"
        with pytest.raises(VideoError, match=refusal) as caught:
            segment_video(predictor, clip, tmp_path / f"tiny{suffix}", masks_dir=tmp_path / "masks")
        assert "\n" not in str(caught.value) and caught.value.frames_written == 0
        assert not (tmp_path / f"tiny{suffix}").exists() and not (tmp_path / "masks").exists()
    for width, height in smallest:  # the measured limits refuse nothing the encoder writes
        clip = write_frames(tmp_path / "small.avi", [np.full((height, width, 3), 100, np.uint8)] * 3)
        segment_video(predictor, clip, tmp_path / f"small{suffix}")
        assert count_frames(tmp_path / f"small{suffix}") == (3, FPS, (width, height))


def test_replace_masks_removes_only_earlier_frame_masks(predictor: Predictor, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    segment_video(predictor, make_clip(tmp_path / "long.avi", 4, "MJPG"), tmp_path / "o.mp4", masks_dir=masks)
    for other in ("notes.txt", "12.png", "000002.png.bak"):
        (masks / other).write_text("the user's")
    (masks / "0000003.png").mkdir()  # a folder of the frame naming: not ours to remove
    # A numbered PNG of the user's (no prediction marker) is not ours to remove either.
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "000009.png")
    short = make_clip(tmp_path / "short.avi", 1, "MJPG")
    segment_video(predictor, short, tmp_path / "o.mp4", masks_dir=masks)
    assert len(list(masks.glob("0*.png"))) == 6  # without replace_masks nothing is removed
    segment_video(predictor, short, tmp_path / "o.mp4", masks_dir=masks, replace_masks=True)
    assert {p.name for p in masks.iterdir()} == {"000001.png", "0000003.png", "000002.png.bak", "12.png", "notes.txt",
                                                 "000009.png"}


def test_exclusive_never_replaces_a_file_that_appeared_meanwhile(predictor: Predictor, tmp_path: Path) -> None:
    """Two runs started at once into one folder: each checked that its files were free before loading its model."""
    clip = make_clip(tmp_path / "clip.avi", 2, "MJPG")
    (tmp_path / "taken.mp4").write_bytes(b"the other run's overlay")
    with pytest.raises(UserError, match="taken.mp4: appeared while predicting and was not replaced"):
        segment_video(predictor, clip, tmp_path / "taken.mp4", exclusive=True)
    assert (tmp_path / "taken.mp4").read_bytes() == b"the other run's overlay"
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "000002.png").write_bytes(b"the other run's mask")
    with pytest.raises(UserError, match="000002.png: appeared while predicting"):
        segment_video(predictor, clip, tmp_path / "o.mp4", masks_dir=tmp_path / "masks", exclusive=True)
    assert (tmp_path / "masks" / "000002.png").read_bytes() == b"the other run's mask"
    assert segment_video(predictor, clip, tmp_path / "new.mp4", masks_dir=tmp_path / "new", exclusive=True).frames == 2


def test_an_overlay_path_that_is_the_video_itself_is_refused(predictor: Predictor, tmp_path: Path) -> None:
    """clip.with_suffix(".mp4") of an .mp4 replaced the video with its overlay, even through another spelling."""
    clip = make_clip(tmp_path / "clip.mp4", 2)
    before = clip.read_bytes()
    for same in (clip, tmp_path / "." / "clip.mp4"):
        with pytest.raises(UserError, match="clip.mp4: is the video file; overlay_path names a new file to write"):
            segment_video(predictor, clip, same)
    assert clip.read_bytes() == before


@pytest.mark.parametrize("exclusive", [False, True])
def test_an_interrupted_video_leaves_no_partial_overlay(predictor: Predictor, tmp_path: Path, exclusive: bool) -> None:
    """Ctrl-C after a frame: no overlay of the first frames under the final name, an earlier one intact."""
    clip = make_clip(tmp_path / "clip.avi", 4, "MJPG")
    target = tmp_path / "out" / "clip_overlay.mp4"
    target.parent.mkdir()
    if not exclusive:
        target.write_bytes(b"an earlier run's whole overlay")

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        segment_video(predictor, clip, target, on_frame=interrupt, exclusive=exclusive)
    assert [p.read_bytes() for p in target.parent.iterdir()] == ([] if exclusive else
                                                                 [b"an earlier run's whole overlay"])
    segment_video(predictor, clip, target)
    assert target.stat().st_mode & 0o777 == 0o644  # readable by others, as a file written in place would be


def test_split_videos_by_suffix() -> None:
    paths = [Path("a.jpg"), Path("b.MP4"), Path("c.png"), Path("d.mkv"), Path("e.mov"), Path("f.avi")]
    assert split_videos(paths) == ([Path("a.jpg"), Path("c.png")], [Path("b.MP4"), Path("d.mkv"), Path("e.mov"),
                                                                     Path("f.avi")])


def test_estimated_frame_counts_get_slack_exact_ones_none() -> None:
    def info(name: str, frames: int) -> VideoInfo:
        return VideoInfo(Path(name), frames, 25.0, 64, 48)

    assert ends_early(29, info("a.avi", 30)) and ends_early(29, info("a.mp4", 30))
    assert not ends_early(30, info("a.mov", 30))
    assert not ends_early(29, info("a.mkv", 30)) and ends_early(28, info("a.mkv", 30))
    assert not ends_early(990, info("a.webm", 1000)) and ends_early(989, info("a.webm", 1000))
