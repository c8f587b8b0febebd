"""Prediction files: distinct names for every input, nothing replaced that the run did not write, our own files
recognised so they are never taken for photos."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import read_label_png
from deeplab.errors import UserError
from deeplab.inference.outputs import (
    PredictionWriter,
    free_output_folder,
    is_prediction_file,
    output_names,
    prediction_file_names,
    split_earlier_predictions,
)

MASK = np.array([[0, 1], [2, 1]], np.uint8)
IMAGE = np.zeros((2, 2, 3), np.uint8)


def test_names_are_the_stem_unless_inputs_clash():
    inputs = [Path("in/dup.jpg"), Path("in/dup.png"), Path("in/solo.jpg"), Path("a/x.tif"), Path("b/x.tif"),
              Path("in/Case.jpg"), Path("in/case.png"), Path("in/dup.jpg")]
    names = output_names(inputs)
    assert names == {Path("in/dup.jpg"): "dup.jpg", Path("in/dup.png"): "dup.png", Path("in/solo.jpg"): "solo",
                     Path("a/x.tif"): "a_x.tif", Path("b/x.tif"): "b_x.tif", Path("in/Case.jpg"): "Case.jpg",
                     Path("in/case.png"): "case.png"}
    # Same folder name and file name on two paths, and names equal but for case: numbered.
    deep = output_names([Path("p/a/x.jpg"), Path("q/a/x.jpg"), Path("r/A/X.JPG")])
    assert list(deep.values()) == ["a_x.jpg", "a_x.jpg-2", "A_X.JPG-3"]


def test_a_file_named_twice_is_one_input():
    """``predict.py a.jpg $PWD/a.jpg`` (or ``in/ ./in/a.jpg``) segments a.jpg once, not into a second ``-2`` copy."""
    names = output_names([Path("in/a.jpg"), Path.cwd() / "in" / "a.jpg", Path("in/../in/a.jpg"), Path("in/b.jpg")])
    assert names == {Path("in/a.jpg"): "a", Path("in/b.jpg"): "b"}


def test_numbered_names_skip_the_names_of_other_inputs():
    # The third input's stem is what numbering the second would give it.
    names = output_names([Path("d1/x/a.jpg"), Path("d2/x/a.jpg"), Path("d4/x_a.jpg-2.png"),
                          Path("d5/X_A.JPG-3.png")])
    assert len({name.casefold() for name in names.values()}) == 4
    assert names[Path("d4/x_a.jpg-2.png")] == "x_a.jpg-2" and names[Path("d5/X_A.JPG-3.png")] == "X_A.JPG-3"


def test_every_file_written_is_marked_as_ours(tmp_path):
    writer = PredictionWriter(tmp_path / "out", [tmp_path / "photo.jpg"])
    mask_path, overlay_path = writer.save(tmp_path / "photo.jpg", IMAGE, MASK, class_names=["a", "b", "c"],
                                          alpha=0.5)
    assert (mask_path.name, overlay_path.name) == ("photo_mask.png", "photo_overlay.png")
    assert np.array_equal(read_label_png(mask_path, 3), MASK)
    assert is_prediction_file(mask_path) and is_prediction_file(overlay_path)
    Image.fromarray(MASK, mode="L").save(tmp_path / "user_mask.png")  # the user's own ground truth
    assert not is_prediction_file(tmp_path / "user_mask.png")
    photos, earlier = split_earlier_predictions([tmp_path / "user_mask.png", mask_path, overlay_path])
    assert photos == [tmp_path / "user_mask.png"] and earlier == [mask_path, overlay_path]


def test_a_large_photo_is_told_from_our_files_without_pillows_warning(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "camera.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: over Pillow's warning limit, under its error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert split_earlier_predictions([tmp_path / "camera.png"]) == ([tmp_path / "camera.png"], [])


def test_existing_files_stop_the_run_before_any_work_unless_overwrite(tmp_path):
    (tmp_path / "photo_mask.png").write_bytes(b"the user's ground truth")
    writer = PredictionWriter(tmp_path, [tmp_path / "photo.jpg", tmp_path / "other.jpg"])
    with pytest.raises(UserError) as refused:
        writer.check()
    assert str(refused.value).startswith(f"{tmp_path / 'photo_mask.png'}: exists and this run did not write it; "
                                         "pass --overwrite")
    with pytest.raises(UserError, match="appeared while predicting"):  # exclusive creation, even unchecked
        writer.save(tmp_path / "photo.jpg", IMAGE, MASK, class_names=["a", "b", "c"], alpha=0.5)
    assert (tmp_path / "photo_mask.png").read_bytes() == b"the user's ground truth"
    replacing = PredictionWriter(tmp_path, [tmp_path / "photo.jpg"], overwrite=True)
    replacing.check()
    replacing.save(tmp_path / "photo.jpg", IMAGE, MASK, class_names=["a", "b", "c"], alpha=0.5)
    assert is_prediction_file(tmp_path / "photo_mask.png") and not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / "photo_mask.png").stat().st_mode & 0o777 == 0o644  # readable by others, not mkstemp's 0600


def test_an_input_is_never_an_output(tmp_path):
    inputs = [tmp_path / "a.jpg", tmp_path / "a_mask.png"]
    with pytest.raises(UserError, match=r"a_mask.png: is an input, and the prediction of .*a.jpg would replace it"):
        PredictionWriter(tmp_path, inputs, overwrite=True).check()


def test_the_default_folder_is_numbered_when_taken(tmp_path):
    inputs = [tmp_path / "photo.jpg"]
    assert free_output_folder(tmp_path / "predictions", inputs) == tmp_path / "predictions"
    PredictionWriter(tmp_path / "predictions", inputs).save(inputs[0], IMAGE, MASK, class_names="abc", alpha=0.5)
    assert free_output_folder(tmp_path / "predictions", inputs) == tmp_path / "predictions-2"
    assert free_output_folder(tmp_path / "predictions", [tmp_path / "new.jpg"]) == tmp_path / "predictions"


def test_prediction_file_names_cover_the_devkit_and_ours():
    assert prediction_file_names(Path("JPEGImages/2007_000033.jpg")) == [
        "2007_000033.png", "2007_000033_mask.png", "2007_000033.jpg_mask.png"]


def test_videos_outputs_are_named_and_guarded_like_images(tmp_path):
    images, videos = [tmp_path / "clip.jpg", tmp_path / "solo.png"], [tmp_path / "clip.mp4", tmp_path / "walk.mov"]
    writer = PredictionWriter(tmp_path / "out", images, videos=videos, save_masks=True)
    assert writer.images == images and writer.videos == videos
    assert writer.paths(images[0])[0].name == "clip.jpg_mask.png"  # the stem is shared with a video
    assert [p.name for p in writer.video_paths(videos[0])] == ["clip.mp4_overlay.mp4", "clip.mp4_masks"]
    (tmp_path / "out" / "walk_masks").mkdir(parents=True)
    assert writer.existing() == []  # an empty frame-mask folder replaces nothing
    (tmp_path / "out" / "walk_masks" / "000001.png").write_bytes(b"a frame mask of an earlier run")
    (tmp_path / "out" / "walk_overlay.mp4").write_bytes(b"an earlier overlay video")
    assert writer.existing() == [tmp_path / "out" / "walk_overlay.mp4", tmp_path / "out" / "walk_masks"]
    with pytest.raises(UserError, match=r"walk_overlay.mp4: exists and this run did not write it \(1 more"):
        writer.check()
    assert PredictionWriter(tmp_path / "out", images, videos=videos).existing() == [tmp_path / "out" / "walk_overlay.mp4"]


def test_a_folder_where_a_file_goes_or_the_reverse_stops_the_run_even_with_overwrite(tmp_path):
    """``--overwrite`` replaces files with files; a folder named like a mask (or a file named like a video's
    frame-mask folder) would fail the run halfway, after the model loaded and an overlay video was begun."""
    (tmp_path / "photo_mask.png").mkdir()
    with pytest.raises(UserError, match=r"photo_mask.png: is a folder, where a file of .*photo.jpg goes"):
        PredictionWriter(tmp_path, [tmp_path / "photo.jpg"], overwrite=True).check()
    (tmp_path / "clip_masks").write_bytes(b"the user's notes")
    with pytest.raises(UserError, match=r"clip_masks: is a file, where the frame-mask folder of .*clip.mp4 goes"):
        PredictionWriter(tmp_path, [], videos=[tmp_path / "clip.mp4"], save_masks=True, overwrite=True).check()
    assert (tmp_path / "clip_masks").read_bytes() == b"the user's notes"
