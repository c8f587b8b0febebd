"""The Predictor: a photo in, its class mask out at the photo's size; normalisation from the checkpoint;
huge photos shrunk for the model and the mask scaled back without a full-size score buffer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from datasets import build_eval_transform, read_rgb
from deeplab import build_model, save_checkpoint
from deeplab.errors import UserError
from deeplab.inference import Predictor, create_engine, shrink_to, upsample_argmax


def test_upsample_argmax_equals_full_interpolation() -> None:
    scores = torch.randn(1, 5, 7, 9)
    full = F.interpolate(scores, size=(30, 41), mode="bilinear", align_corners=False)[0].argmax(0)
    np.testing.assert_array_equal(upsample_argmax(scores, (30, 41)).numpy(), full.numpy())


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (5, 7, 9)])
def test_upsample_argmax_refuses_anything_but_one_images_scores(shape: tuple[int, ...]) -> None:
    """A batch's scores gave the first image's mask alone, and (C, h, w) scores a row of garbage."""
    for size in [(7, 9), (30, 41)]:
        with pytest.raises(ValueError, match=r"\(1, C, h, w\) scores of one image"):
            upsample_argmax(torch.randn(shape), size)


def test_predict_is_the_engine_argmax_after_eval_normalisation(tmp_path: Path, make_checkpoint) -> None:
    model = make_checkpoint(tmp_path / "m.pt", ["a", "b", "c"], num_classes=3)
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch")
    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    prediction = predictor.predict(image)
    tensor, _ = build_eval_transform(mean=model.mean, std=model.std)(image, np.zeros((37, 45), np.uint8))
    expected = create_engine(model, engine="torch")(tensor[None]).argmax(1)[0].numpy()
    np.testing.assert_array_equal(prediction.mask, expected)
    assert prediction.model_size == (37, 45) and predictor.class_names == ["a", "b", "c"]


def test_the_predictors_views_are_the_default_and_a_call_can_override_them(tmp_path: Path, make_checkpoint) -> None:
    make_checkpoint(tmp_path / "m.pt", ["a", "b", "c"], num_classes=3, varied=True)
    plain = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch")
    turned = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", any_orientation=True)
    image = np.random.default_rng(1).integers(0, 256, (29, 41, 3), dtype=np.uint8)
    averaged = plain.predict(image, any_orientation=True).mask
    assert not np.array_equal(averaged, plain.predict(image).mask)
    np.testing.assert_array_equal(turned.predict(image).mask, averaged)
    np.testing.assert_array_equal(turned.predict_batch([image, image])[1].mask, averaged)
    np.testing.assert_array_equal(turned.predict(image, any_orientation=False).mask, plain.predict(image).mask)


def test_anything_but_a_uint8_rgb_array_is_refused(tmp_path: Path, make_checkpoint) -> None:
    """A float image in [0, 1] (skimage, torchvision) used to be segmented as a nearly black picture."""
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch")
    image = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    for wrong in (image / 255.0, image[..., 0], np.dstack([image, image[..., :1]])):
        with pytest.raises(ValueError, match=rf"expected a uint8 H x W x 3 RGB image, got {wrong.dtype} of shape"):
            predictor.predict(wrong)
    for other, kind in ((Image.fromarray(image), r"PIL\.Image\.Image"), (torch.from_numpy(image), r"torch\.Tensor")):
        with pytest.raises(ValueError, match=rf"numpy array, got a {kind}: pass np.asarray"):
            predictor.predict(other)


@pytest.mark.slow
def test_a_model_in_training_mode_is_refused_as_an_engine() -> None:
    """Its masks changed from call to call (dropout) and each call moved its BatchNorm running statistics."""
    model = build_model(num_classes=3, width_mult=0.25)
    with pytest.raises(ValueError, match=r"^engine: a model in training mode.*pass model.eval\(\)"):
        Predictor(model, class_names=list("abc"), mean=model.mean, std=model.std, device=torch.device("cpu"))
    predictor = Predictor(model.eval(), class_names=list("abc"), mean=model.mean, std=model.std,
                          device=torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(predictor.predict(image).mask, predictor.predict(image).mask)


def test_a_model_of_half_precision_weights_is_refused_as_an_engine() -> None:
    """Images arrive as float32: such a model failed on the first image with torch's dtype mismatch."""
    model = build_model(num_classes=3, width_mult=0.25).eval()
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=rf"^engine: a model with {dtype} weights.*pass model\.float\(\)"):
            Predictor(model.to(dtype), class_names=list("abc"), mean=model.mean, std=model.std,
                      device=torch.device("cpu"))
    Predictor(model.float(), class_names=list("abc"), mean=model.mean, std=model.std, device=torch.device("cpu"))


@pytest.mark.parametrize(("given", "words"), [
    ({"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}, "mean .* is not of pixels scaled to"),
    ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
    ({"mean": (0.5, 0.5)}, "mean needs three finite numbers"),
    ({"class_names": "abc"}, "class_names abc: takes a list of class names, not a string"),
])
def test_normalisation_and_names_the_predictor_cannot_use_are_refused_when_built(given: dict, words: str) -> None:
    """mmsegmentation's 0..255 mean gave a mask of one class, a zero std a message about diverged weights, and a
    string its letters as class names."""
    model = build_model(num_classes=3, width_mult=0.25).eval()
    arguments = {"class_names": list("abc"), "mean": model.mean, "std": model.std, **given}
    with pytest.raises((ValueError, UserError), match=words):
        Predictor(model, device=torch.device("cpu"), **arguments)


def test_names_of_another_class_count_than_the_engine_scores_are_refused() -> None:
    """VOC's 21 names given for a 3-class model named its masks' ids after aeroplane and bicycle, without a word."""
    model = build_model(num_classes=3, width_mult=0.25).eval()
    predictor = Predictor(model, class_names=list("abcd"), mean=model.mean, std=model.std, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="class_names: 4 names, but the engine scores 3 classes"):
        predictor.predict(np.zeros((9, 11, 3), np.uint8))


def test_normalisation_saved_in_the_checkpoint_wins(tmp_path: Path, make_checkpoint) -> None:
    model = make_checkpoint(tmp_path / "m.pt", num_classes=2)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    save_checkpoint({**ckpt, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}, tmp_path / "raw.pt")
    predictor = Predictor.from_checkpoint(tmp_path / "raw.pt", device="cpu", engine="torch")
    image = np.full((4, 5, 3), 255, np.uint8)
    assert predictor.mean == (0.0, 0.0, 0.0) and torch.allclose(predictor.prepare(image), torch.ones(1, 3, 4, 5))
    assert Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch").mean == model.mean


def test_large_image_is_shrunk_for_the_model_only(tmp_path: Path, make_checkpoint) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    predictor = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", max_size=64)
    image = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    prediction = predictor.predict(image)
    assert prediction.mask.shape == (150, 200) and prediction.model_size == (48, 64)
    assert shrink_to(image, None) is image and shrink_to(image, 300) is image
    with pytest.raises(UserError, match=r"^max_size: must be 0 or more, got -64$"):  # shrank every image to 1x1
        Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", max_size=-64)
    with pytest.raises(UserError, match=r"^max_size: must be 0 or more, got -64$"):
        shrink_to(image, -64)  # public too: it gave a 1x1 image


@pytest.mark.parametrize("stride", [12, "8"])
def test_an_output_stride_no_backbone_takes_is_the_arguments_fault_not_the_checkpoints(tmp_path: Path, stride,
                                                                                     make_checkpoint) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    with pytest.raises(UserError, match=rf"^--output-stride {stride!r}: choose one of 8, 16, 32$"):
        Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", output_stride=stride)
    assert Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", output_stride=8).model_config[
        "atrous_rates"] == [12, 24, 36]


def test_names_must_match_the_class_count(tmp_path: Path, make_checkpoint) -> None:
    make_checkpoint(tmp_path / "m.pt", num_classes=3)
    with pytest.raises(UserError, match="3 classes but 2 class names"):
        Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", class_names=["a", "b"])
    with pytest.raises(UserError, match=r"^class_names cat: takes a list of class names, not a string"):
        Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", class_names="cat")  # c, a, t
    ids = Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch")
    assert ids.class_names == ["0", "1", "2"]


@pytest.mark.slow
def test_int8_calibrates_on_the_named_images_only(tmp_path: Path, make_checkpoint,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from deeplab.inference import calibration

    make_checkpoint(tmp_path / "m.pt", num_classes=2)
    for seed, name in enumerate(("named.png", "input.png")):
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(
            tmp_path / name)
    read = []
    monkeypatch.setattr(calibration, "read_rgb", lambda path: read.append(path.name) or read_rgb(path))
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="torch", calibration=[tmp_path / "named.png"])
    assert read == []  # only int8 calibrates
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8", calibration=[tmp_path / "named.png"],
                              fallback_calibration=[tmp_path / "input.png"])
    assert read == ["named.png"]
    Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8",
                              fallback_calibration=[tmp_path / "input.png"])
    assert read == ["named.png", "input.png"]  # the checkpoint names no training data: the inputs calibrate
    with pytest.raises(UserError, match="--engine int8: needs calibration images; pass --calibration DIR"):
        Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8")
    for name, one in (("calibration", str(tmp_path)), ("fallback_calibration", tmp_path / "input.png")):
        # Its letters were taken for files: '/: is a folder, not an image'.
        with pytest.raises(UserError, match=rf"^{name} .*: takes a list of image files, not one path"):
            Predictor.from_checkpoint(tmp_path / "m.pt", device="cpu", engine="int8", **{name: one})


def test_same_size_argmax_keeps_the_lowest_id_on_ties() -> None:
    scores = torch.zeros(1, 4, 3, 5)
    scores[0, 2, 0, 0] = scores[0, 3, 0, 0] = 1.0
    mask = upsample_argmax(scores, (3, 5))
    assert mask.dtype == torch.uint8 and int(mask[0, 0]) == 2 and int(mask.sum()) == 2
    np.testing.assert_array_equal(mask.numpy(), scores[0].argmax(0).numpy())
