"""tools/predict.py: masks and overlays at the input's size, awkward inputs, bad inputs, checkpoint discovery."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_eval_transform
from deeplab.inference import Predictor, create_engine
from tools import predict

CLASSES = ["background", "red", "green", "blue"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, make_checkpoint) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return path, make_checkpoint(path, CLASSES, num_classes=len(CLASSES))


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """predict.main with the plain torch engine (cheap to set up; ``auto`` is left to the memory test)."""
    rc = predict.main([*args, "--engine", "torch"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_mask_is_argmax_at_original_size(checkpoint, tmp_path: Path, capsys) -> None:
    path, model = checkpoint
    image = random_rgb(37, 45)
    Image.fromarray(image).save(tmp_path / "photo.png")
    rc, _, _ = run([str(tmp_path / "photo.png"), "--checkpoint", str(path), "--out", str(tmp_path / "out")], capsys)
    assert rc == 0
    mask = Image.open(tmp_path / "out" / "photo_mask.png")
    assert mask.mode == "P" and mask.size == (45, 37)
    tensor, _ = build_eval_transform(mean=model.mean, std=model.std)(image, np.zeros((37, 45), np.uint8))
    expected = create_engine(model, engine="torch")(tensor[None]).argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.asarray(mask), expected)
    assert Image.open(tmp_path / "out" / "photo_overlay.png").size == (45, 37)


@pytest.mark.parametrize("flag, view", [("--flip", {"flip": True}), ("--any-orientation", {"any_orientation": True})])
def test_test_time_views_give_the_predictors_averaged_masks(flag, view, tmp_path: Path, make_checkpoint,
                                                           capsys) -> None:
    """Each image's mask averages the views asked for, as ``Predictor.predict`` does with them; the plain mask
    differs on this model, so the flag did reach the model."""
    path = tmp_path / "varied.pt"
    make_checkpoint(path, CLASSES, num_classes=len(CLASSES), varied=True)
    image = random_rgb(37, 45, seed=3)
    Image.fromarray(image).save(tmp_path / "photo.png")
    rc, _, _ = run([str(tmp_path / "photo.png"), "--checkpoint", str(path), "--out", str(tmp_path / "out"), flag],
                   capsys)
    assert rc == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "photo_mask.png"))
    predictor = Predictor.from_checkpoint(path, device="cpu", engine="torch")
    np.testing.assert_array_equal(mask, predictor.predict(image, **view).mask)
    assert not np.array_equal(mask, predictor.predict(image).mask)


def save_awkward_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Write EXIF-rotated, greyscale, RGBA and 16-bit images; returns each stem's displayed (width, height)."""
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(random_rgb(30, 40)).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(random_rgb(33, 21)[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([random_rgb(25, 27), np.full((25, 27), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray((np.arange(29 * 31, dtype=np.uint16).reshape(29, 31) * 70)).save(folder / "deep.png")
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    return {"rotated": (30, 40), "grey": (21, 33), "rgba": (27, 25), "deep": (31, 29)}


def test_awkward_inputs_from_a_folder(checkpoint, tmp_path: Path, capsys) -> None:
    sizes = save_awkward_inputs(tmp_path / "in")
    args = [str(tmp_path / "in"), "--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "out")]
    rc, out, err = run(args, capsys)
    assert rc == 0, err
    for stem, size in sizes.items():
        assert Image.open(tmp_path / "out" / f"{stem}_mask.png").size == size
        assert Image.open(tmp_path / "out" / f"{stem}_overlay.png").size == size
    assert "4 of 4 images" in out


def test_bad_images_are_skipped_and_named(checkpoint, tmp_path: Path, capsys, monkeypatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(random_rgb(20, 24)).save(folder / "good.png")
    (folder / "text.jpg").write_text("this is not a JPEG")
    Image.fromarray(random_rgb(64, 64, seed=1)).save(folder / "cut.png")
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:3000])
    Image.fromarray(random_rgb(70, 70)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # huge.png: beyond what Pillow decodes safely
    rc, _, err = run([str(folder), str(tmp_path / "absent.jpg"), "--checkpoint", str(checkpoint[0]),
                      "--out", str(tmp_path / "out")], capsys)
    assert rc == 1
    assert (tmp_path / "out" / "good_mask.png").is_file() and (tmp_path / "out" / "good_overlay.png").is_file()
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert f"error: {folder / 'huge.png'}: image too large to decode safely (" in err
    for name in ("text.jpg", "cut.png", "absent.jpg"):
        assert sum(name in line for line in lines) == 1
    assert not (tmp_path / "out" / "text_mask.png").exists()


@pytest.mark.parametrize("engine", ["torch", "int8"])
def test_images_too_small_for_an_imported_model_are_skipped_and_named(engine: str, tmp_path: Path,
                                                                     imported_checkpoint, capsys) -> None:
    """VainF's unpadded stem needs 3 pixels a side: a thumbnail, or a strip shrunk by --max-size, is one line (and
    int8, calibrating on these inputs, leaves them out)."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(random_rgb(20, 24)).save(folder / "good.png")
    Image.fromarray(random_rgb(2, 40)).save(folder / "strip.png")
    Image.fromarray(random_rgb(8, 400)).save(folder / "wide.png")
    rc = predict.main([str(folder), "--checkpoint", str(imported_checkpoint("vainf")), "--max-size", "100",
                       "--out", str(tmp_path / "out"), "--engine", engine, "--device", "cpu"])  # int8: CPUs only
    out, err = capsys.readouterr()
    err = "\n".join(line for line in err.splitlines() if line.startswith("error: "))
    assert rc == 1 and "1 of 3 images" in out
    assert (tmp_path / "out" / "good_mask.png").is_file()
    assert err.splitlines() == [
        f"error: {folder / 'strip.png'}: 40x2 pixels: too small for this model, which needs at least 3 pixels a side "
        "(skipped)",
        f"error: {folder / 'wide.png'}: 400x8 pixels, 100x2 once shrunk for the model: too small for this model, "
        "which needs at least 3 pixels a side (skipped)"]


@pytest.mark.parametrize("problem", ["out_under_a_file", "out_is_a_file", "corrupt_checkpoint"])
def test_fatal_problems_are_one_line(problem: str, checkpoint, tmp_path: Path, capsys) -> None:
    Image.fromarray(random_rgb(20, 24)).save(tmp_path / "good.png")
    ckpt, out = checkpoint[0], tmp_path / "out"
    if problem != "corrupt_checkpoint":
        (tmp_path / "file").write_text("a file, not a folder")
        out = tmp_path / "file" if problem == "out_is_a_file" else tmp_path / "file" / "out"
        ckpt = tmp_path / "absent.pt"  # --out is checked before the model loads (and its engine is prepared)
    else:
        ckpt = tmp_path / "cut.pt"
        ckpt.write_bytes(checkpoint[0].read_bytes()[:5000])
    rc, _, err = run([str(tmp_path / "good.png"), "--checkpoint", str(ckpt), "--out", str(out)], capsys)
    assert rc == 2
    named = ckpt if problem == "corrupt_checkpoint" else out
    assert err.startswith(f"error: {named}:") and len(err.strip().splitlines()) == 1


def test_default_checkpoint_is_newest_best(checkpoint, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for name, age in (("old", 100), ("new", 0)):
        target = Path("runs") / name / "best.pt"
        target.parent.mkdir(parents=True)
        target.write_bytes(checkpoint[0].read_bytes())
        os.utime(target, (1_700_000_000 - age, 1_700_000_000 - age))
    Image.fromarray(random_rgb(20, 24)).save("good.png")
    rc, out, _ = run(["good.png"], capsys)
    assert rc == 0
    assert str(Path("runs") / "new" / "best.pt") in out.splitlines()[0]
    assert Path("predictions/good_mask.png").is_file()


def test_no_checkpoint_explains_how_to_get_one(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(random_rgb(20, 24)).save("good.png")
    rc, _, err = run(["good.png"], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "tools/train.py" in err and "--checkpoint" in err


@pytest.mark.slow
def test_large_image_is_resized_and_mask_restored(checkpoint, tmp_path: Path, capsys) -> None:
    ramp = np.linspace(0, 255, 4000, dtype=np.float32)
    image = np.broadcast_to(ramp[None, :, None], (3000, 4000, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "big.jpg", quality=80)
    Image.fromarray(image[:50, :60]).save(tmp_path / "small.png")
    args = [str(tmp_path / "big.jpg"), str(tmp_path / "small.png"), "--checkpoint", str(checkpoint[0]),
            "--out", str(tmp_path / "out"), "--max-size", "128"]
    rc, out, _ = run([*args, "--verbose"], capsys)
    assert rc == 0
    assert Image.open(tmp_path / "out" / "big_mask.png").size == (4000, 3000)
    big_line, small_line = out.splitlines()[:2]
    assert "resized 4000x3000 to 128x96" in big_line and "(resized" not in small_line
    args = [str(tmp_path / "small.png"), "--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "out"),
            "--max-size", "32", "--overwrite"]
    rc, out, _ = run(args, capsys)  # without --verbose: one summary line instead of a line per image
    assert rc == 0 and "small.png" not in out and "over --max-size 32): 1 of 1 images" in out


def test_int8_engine_calibrates_on_the_inputs(checkpoint, tmp_path: Path, capsys) -> None:
    path, _ = checkpoint
    for i, size in enumerate([(33, 41), (40, 36)]):
        Image.fromarray(random_rgb(*size, seed=i)).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_text("not an image")
    rc = predict.main([str(tmp_path), "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--engine", "int8",
                       "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "--engine" not in err  # only the broken file failed
    for i, (height, width) in enumerate([(33, 41), (40, 36)]):
        assert Image.open(tmp_path / "out" / f"img{i}_mask.png").size == (width, height)


def test_predicting_into_the_photo_folder_never_destroys_or_rereads_files(checkpoint, tmp_path: Path,
                                                                            capsys) -> None:
    photos, ckpt = tmp_path / "photos", str(checkpoint[0])
    photos.mkdir()
    Image.fromarray(random_rgb(20, 24)).save(photos / "photo.jpg")
    Image.fromarray(np.ones((20, 24), np.uint8), mode="L").save(photos / "photo_mask.png")  # the user's ground truth
    truth = (photos / "photo_mask.png").read_bytes()
    # The truth among the inputs (refused even with --overwrite), or only in the output folder.
    for args in ([str(photos), "--overwrite"], [str(photos / "photo.jpg")]):
        rc, _, err = run([*args, "--checkpoint", ckpt, "--out", str(photos)], capsys)
        assert rc == 2 and err.startswith(f"error: {photos / 'photo_mask.png'}: ") and len(err.splitlines()) == 1
        assert sorted(p.name for p in photos.iterdir()) == ["photo.jpg", "photo_mask.png"]
        assert (photos / "photo_mask.png").read_bytes() == truth
    (photos / "photo_mask.png").rename(tmp_path / "truth.png")
    Image.fromarray(random_rgb(22, 21, 1)).save(photos / "other.png")
    assert run([str(photos), "--checkpoint", ckpt, "--out", str(photos)], capsys)[0] == 0
    written = sorted(p.name for p in photos.iterdir())
    assert len(written) == 6
    rc, _, err = run([str(photos), "--checkpoint", ckpt, "--out", str(photos)], capsys)  # a second run: refused
    assert rc == 2 and "exists and this run did not write it (3 more files alike); pass --overwrite" in err
    rc, out, _ = run([str(photos), "--checkpoint", ckpt, "--out", str(photos), "--overwrite"], capsys)
    assert rc == 0 and "skipping 4 masks and overlays" in out and "2 of 2 images segmented" in out
    assert sorted(p.name for p in photos.iterdir()) == written  # its own outputs were not segmented again


@pytest.mark.slow
def test_inputs_that_share_a_stem_get_their_own_files(checkpoint, tmp_path: Path, capsys) -> None:
    path, model = checkpoint
    folder = tmp_path / "in"
    folder.mkdir()
    (tmp_path / "other").mkdir()
    images = {"dup.jpg": random_rgb(20, 24, 1), "dup.png": random_rgb(26, 22, 2), "img.tif": random_rgb(18, 30, 3),
              "img.webp": random_rgb(31, 17, 4), "../other/dup.jpg": random_rgb(25, 25, 5)}
    for name, image in images.items():
        Image.fromarray(image).save(folder / name, **({"quality": 100} if name.endswith("jpg") else {}))
    rc, out, err = run([str(folder), str(tmp_path / "other" / "dup.jpg"), "--checkpoint", str(path),
                        "--out", str(tmp_path / "out")], capsys)
    assert rc == 0, err
    expected = {"in_dup.jpg", "other_dup.jpg", "dup.png", "img.tif", "img.webp"}
    assert {p.name[: -len("_mask.png")] for p in (tmp_path / "out").glob("*_mask.png")} == expected
    assert len(list((tmp_path / "out").iterdir())) == 2 * len(expected) and "5 of 5 images" in out
    engine = create_engine(model, engine="torch")
    for source, name in ((folder / "dup.png", "dup.png"), (folder / "img.webp", "img.webp")):
        image = np.asarray(Image.open(source).convert("RGB"))
        tensor, _ = build_eval_transform(mean=model.mean, std=model.std)(image, np.zeros(image.shape[:2], np.uint8))
        expected_mask = engine(tensor[None]).argmax(1)[0].numpy()
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}_mask.png")), expected_mask)


def test_default_output_folder_is_numbered_when_taken(checkpoint, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(random_rgb(20, 24)).save("good.png")
    for folder in ("predictions", "predictions-2"):
        rc, out, _ = run(["good.png", "--checkpoint", str(checkpoint[0])], capsys)
        assert rc == 0 and out.strip().endswith(f"results in {folder}") and Path(folder, "good_mask.png").is_file()


@pytest.mark.parametrize("problem", ["negative_max_size", "int8_nothing_readable", "mean_is_text", "too_many_classes",
                                     "out_named_like_a_file"])
def test_more_bad_input_is_one_line(problem: str, checkpoint, tmp_path: Path, capsys, make_checkpoint) -> None:
    args = ["--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "out")]
    Image.fromarray(random_rgb(20, 24)).save(tmp_path / "good.png")
    inputs, named = [str(tmp_path / "good.png")], "--max-size -5"
    if problem == "negative_max_size":
        args += ["--max-size", "-5"]
    elif problem == "out_named_like_a_file":  # a folder "mask.PNG" would hold good_mask.png and good_overlay.png
        args[3], named = str(tmp_path / "out" / "mask.PNG"), f"--out {tmp_path / 'out' / 'mask.PNG'}: names a file"
    elif problem == "int8_nothing_readable":
        (tmp_path / "broken.jpg").write_text("not an image")
        inputs, named = [str(tmp_path / "broken.jpg")], "none of the calibration images from the images to predict"
        args += ["--engine", "int8", "--device", "cpu"]
    elif problem == "too_many_classes":  # 8-bit masks hold ids 0..254 beside 255 = void
        make_checkpoint(tmp_path / "wide.pt", num_classes=256)
        args[1], named = str(tmp_path / "wide.pt"), f"{tmp_path / 'wide.pt'}: its model predicts 256 classes"
    else:
        ckpt = torch.load(checkpoint[0], weights_only=True)
        ckpt["mean"] = "0.485,0.456,0.406"
        torch.save(ckpt, tmp_path / "text_mean.pt")
        args[1], named = str(tmp_path / "text_mean.pt"), f"{tmp_path / 'text_mean.pt'}: not a checkpoint"
    rc = predict.main([*inputs, *args] + ([] if problem == "int8_nothing_readable" else ["--engine", "torch"]))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {named}") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


MEMORY_PROBE = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tools"]
from tools import predict
from deeplab.inference import Predictor
Predictor.from_checkpoint(sys.argv[2], device="cpu")
def kib(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
base = kib("VmRSS")
rc = predict.main([sys.argv[3], "--checkpoint", sys.argv[2], "--out", sys.argv[4], "--device", "cpu"])
print(rc, base, kib("VmHWM"))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to read peak memory")
def test_peak_memory_of_a_512_image(tmp_path: Path, repo_root: Path, make_checkpoint) -> None:
    """A full-width model on 512x512: whole process under 1 GiB, predict itself under 300 MiB on top of imports."""
    make_checkpoint(tmp_path / "full.pt", None, num_classes=21, width_mult=1.0)
    Image.fromarray(random_rgb(512, 512)).save(tmp_path / "img.png")
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(repo_root), str(tmp_path / "full.pt"), str(tmp_path / "img.png"),
         str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=True,
    )
    rc, base, peak = (int(v) for v in result.stdout.split()[-3:])
    assert rc == 0
    assert peak < 1024 * 1024, f"peak {peak} KiB"
    assert peak - base < 300 * 1024, f"predict added {peak - base} KiB"
    print(f"peak {peak // 1024} MiB, {(peak - base) // 1024} MiB above imports and model")


def write_clip(path: Path, frames: int, size: tuple[int, int] = (40, 32), fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for index in range(frames):
        writer.write(random_rgb(size[1], size[0], seed=index))
    writer.release()
    return path


@pytest.mark.slow
def test_videos_beside_images(checkpoint, tmp_path: Path, capsys) -> None:
    """A video gives <stem>_overlay.mp4 (+ masks with --save-masks) beside the images' files; a bad one is skipped."""
    clip = write_clip(tmp_path / "clip.avi", 6)
    whole = write_clip(tmp_path / "long.avi", 20).read_bytes()
    (tmp_path / "cut.avi").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(random_rgb(20, 24)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    rc, stdout, err = run([str(clip), str(tmp_path / "cut.avi"), str(tmp_path / "photo.png"), "--checkpoint",
                           str(checkpoint[0]), "--out", str(out), "--save-masks", "--batch-size", "4"], capsys)
    assert rc == 1
    capture = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 6 and capture.get(cv2.CAP_PROP_FPS) == 10.0
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (40, 32)
    assert len(list((out / "clip_masks").glob("*.png"))) == 6
    assert (out / "photo_mask.png").is_file()
    assert "audio not kept" in stdout and "1 of 1 images and 1 of 2 videos segmented" in stdout
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'cut.avi'}: frame ") and "of 20 could not be decoded" in line


def test_a_video_too_small_to_encode_is_skipped_and_the_rest_done(checkpoint, tmp_path: Path, capsys) -> None:
    line, odd = write_clip(tmp_path / "line.avi", 2, (64, 1)), write_clip(tmp_path / "odd.avi", 2, (17, 33))
    Image.fromarray(random_rgb(20, 24)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    rc, stdout, err = run([str(line), str(odd), str(tmp_path / "photo.png"), "--checkpoint", str(checkpoint[0]),
                           "--out", str(out), "--save-masks"], capsys)
    assert rc == 1 and "1 of 1 images and 1 of 2 videos segmented" in stdout
    assert err.strip() == (f"error: {line}: frames of 64x1 pixels are too small to encode (mp4v needs at least 2 "
                           "pixels a side and 4 in all) (skipped)")
    assert not (out / "line_overlay.mp4").exists() and not (out / "line_masks").exists()
    capture = cv2.VideoCapture(str(out / "odd_overlay.mp4"))  # every pixel kept: odd sides padded, not cropped
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (18, 34)
    assert Image.open(out / "odd_masks" / "000001.png").size == (17, 33)


def test_overwrite_leaves_only_this_runs_frame_masks(checkpoint, tmp_path: Path, capsys) -> None:
    clip, masks = tmp_path / "clip.avi", tmp_path / "out" / "clip_masks"
    args = [str(clip), "--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "out"), "--save-masks"]
    write_clip(clip, 12)
    assert run(args, capsys)[0] == 0 and len(list(masks.iterdir())) == 12
    (masks / "notes.txt").write_text("the user's")
    write_clip(clip, 1)
    assert run([*args, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in masks.iterdir()) == ["000001.png", "notes.txt"]


def test_an_overlay_video_that_appears_while_the_model_loads_is_not_replaced(checkpoint, tmp_path: Path, capsys,
                                                                             monkeypatch) -> None:
    """The same command started twice: the other run's overlay appears after this run checked its --out."""
    out, load = tmp_path / "out", predict.Predictor.from_checkpoint

    def load_while_the_other_run_writes(*args, **kwargs):
        out.mkdir()
        (out / "clip_overlay.mp4").write_bytes(b"the other run's overlay")
        return load(*args, **kwargs)

    monkeypatch.setattr(predict.Predictor, "from_checkpoint", load_while_the_other_run_writes)
    rc, _, err = run([str(write_clip(tmp_path / "clip.avi", 2)), "--checkpoint", str(checkpoint[0]), "--out",
                      str(out)], capsys)
    assert rc == 2 and "clip_overlay.mp4: appeared while predicting and was not replaced" in err
    assert (out / "clip_overlay.mp4").read_bytes() == b"the other run's overlay"


def test_inputs_are_checked_before_the_model_and_folders_give_videos(checkpoint, tmp_path: Path, capsys) -> None:
    # A checkpoint that does not exist: loading it would be the error.
    rc, _, err = run([str(tmp_path / "nothere.jpg"), "--checkpoint", str(tmp_path / "absent.pt"),
                      "--out", str(tmp_path / "e2")], capsys)
    assert rc == 1 and err.strip() == f"error: {tmp_path / 'nothere.jpg'}: no such file or folder"
    assert not (tmp_path / "e2").exists()
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "walk.avi", 2)
    rc, stdout, err = run([str(tmp_path / "clips"), "--checkpoint", str(checkpoint[0]), "--out",
                           str(tmp_path / "out")], capsys)
    assert rc == 0 and (tmp_path / "out" / "walk_overlay.mp4").is_file(), err
    assert stdout.endswith(f"\n1 of 1 videos segmented; results in {tmp_path / 'out'}\n")  # no "0 of 0 images"
    # Predicting into the folder itself, twice: the overlay video written beside its clip is no input the second time,
    # also under the name that keeps the clip's extension (a photo shares its stem).
    args = [str(tmp_path / "clips"), "--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "clips")]
    assert run(args, capsys)[0] == 0
    rc, stdout, err = run([*args, "--overwrite"], capsys)
    assert rc == 0 and "1 of 1 videos segmented" in stdout, err
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["walk.avi", "walk_overlay.mp4"]
    (tmp_path / "clips" / "walk_overlay.mp4").unlink()
    Image.fromarray(random_rgb(20, 24)).save(tmp_path / "clips" / "walk.png")
    assert run(args, capsys)[0] == 0
    rc, stdout, err = run([*args, "--overwrite"], capsys)
    assert rc == 0 and "1 of 1 images and 1 of 1 videos segmented" in stdout, err
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "walk.avi", "walk.avi_overlay.mp4", "walk.png", "walk.png_mask.png", "walk.png_overlay.png"]


def test_an_input_inside_a_frame_mask_folder_is_never_replaced(checkpoint, tmp_path: Path, capsys) -> None:
    masks = tmp_path / "out" / "clip_masks"
    masks.mkdir(parents=True)
    photo = masks / "000001.png"
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(photo)
    write_clip(tmp_path / "clip.avi", 2)
    rc, _, err = run([str(masks), str(tmp_path / "clip.avi"), "--checkpoint", str(checkpoint[0]), "--out",
                      str(tmp_path / "out"), "--save-masks", "--overwrite"], capsys)
    assert rc == 2 and f"{photo}: is an input inside {masks}, where the frame masks of" in err, err
    assert np.asarray(Image.open(photo)).shape == (20, 24, 3) and sorted(p.name for p in masks.iterdir()) == [photo.name]


def test_help_says_audio_is_dropped() -> None:
    assert "audio is not kept" in " ".join(predict.get_args_parser().format_help().split())
