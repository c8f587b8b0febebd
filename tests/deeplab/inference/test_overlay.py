"""Overlays: the mask blended at alpha outside the legend, a legend of the classes present only, any class name
drawn on one line in a font with accented, Greek and Cyrillic letters."""
from __future__ import annotations

import numpy as np
import pytest

from datasets import voc_palette
from deeplab.inference import overlay


def two_class_mask() -> np.ndarray:
    """Background everywhere except class 2 in the bottom-right corner (far from the legend)."""
    mask = np.zeros((120, 160), dtype=np.uint8)
    mask[80:, 120:] = 2
    return mask


def test_overlay_blends_at_alpha_outside_the_legend() -> None:
    image = np.full((120, 160, 3), 200, dtype=np.uint8)
    mask = two_class_mask()
    for alpha in (0.0, 0.25, 1.0):
        out = overlay(image, mask, alpha=alpha, class_names=["bg", "one", "two"])
        assert out.shape == image.shape and out.dtype == np.uint8
        expected = np.rint(200 * (1 - alpha) + voc_palette()[2].astype(float) * alpha)
        np.testing.assert_allclose(out[100, 150], expected, atol=1)
        np.testing.assert_allclose(out[100, 10], np.rint(np.full(3, 200 * (1 - alpha))), atol=1)


def test_legend_shows_present_classes_only() -> None:
    image = np.full((120, 160, 3), 200, dtype=np.uint8)
    mask = two_class_mask()
    with_two = overlay(image, mask, alpha=0.0)
    colours = {tuple(c) for c in with_two[:40, :40].reshape(-1, 3)}
    assert tuple(voc_palette()[2]) in colours  # class 2's swatch, though class 2 lies elsewhere
    only_bg = overlay(image, np.zeros_like(mask), alpha=0.0)
    assert tuple(voc_palette()[2]) not in {tuple(c) for c in only_bg[:40, :40].reshape(-1, 3)}
    assert not np.array_equal(with_two[:40, :80], only_bg[:40, :80])


def test_overlay_rejects_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.uint8))


def test_images_and_masks_overlay_cannot_draw_are_named() -> None:
    """Greyscale, RGBA or float images failed inside OpenCV, and float, bool or out-of-palette masks in numpy's
    indexing, with messages that named neither argument."""
    image, mask = np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8)
    for wrong in (image[..., 0], np.dstack([image, mask]), image / 255.0):
        with pytest.raises(ValueError, match="expected a uint8 H x W x 3 RGB image"):
            overlay(wrong, mask)
    for wrong in (mask.astype(np.float32), mask.astype(bool)):
        with pytest.raises(ValueError, match="mask: expected integer class ids"):
            overlay(image, wrong)
    with pytest.raises(ValueError, match=r"mask: class ids 0..300, but the palette colours 0..255"):
        overlay(image, np.where(np.eye(10, dtype=bool), 300, 0))
    with pytest.raises(ValueError, match=r"class ids 0..2, but the palette colours 0..1"):
        overlay(image, np.where(np.eye(10, dtype=bool), 2, 0), palette=[[0, 0, 0], [255, 0, 0]])
    assert overlay(image, mask + 1, palette=[[0, 0, 0], [255, 0, 0]]).shape == image.shape  # a list is a palette


def legend(names: list[str]) -> np.ndarray:
    """The top-left corner of an overlay whose mask holds every class of ``names``."""
    mask = np.repeat(np.arange(len(names), dtype=np.uint8), 120 * 160 // len(names))[: 120 * 160].reshape(120, 160)
    return overlay(np.full((120, 160, 3), 200, np.uint8), mask, alpha=0.0, class_names=names)[:60, :100]


def test_any_class_name_draws_on_one_line() -> None:
    """A line break in a name made every overlay raise (Pillow measures no multiline text); a blank name drew
    nothing beside its swatch."""
    np.testing.assert_array_equal(legend(["", " ", "\n", "a\tb", "ok"]), legend(["0", "1", "2", "a b", "ok"]))
    np.testing.assert_array_equal(legend(["bg", "one\r\ntwo\u2028"]), legend(["bg", "one  two"]))


def test_names_beyond_ascii_draw_their_own_letters() -> None:
    """Pillow's default font stops at ASCII: every other letter came out as the same empty box."""
    for one, other in (("été", "ètè"), ("Ωμέγα", "Σίγμα"), ("Жёлтый", "Щётный")):
        assert not np.array_equal(legend(["bg", one]), legend(["bg", other])), (one, other)
