"""Copy-paste of one object: the object's pixels and labels, and its void outline, land together and whole."""
from __future__ import annotations

import numpy as np

from datasets.image_files import IGNORE_INDEX
from datasets.paste import paste_object


def _source() -> tuple[np.ndarray, np.ndarray]:
    """A 40x40 source: an L-shaped object of class 3 ringed by a void band, and a 2x2 object of class 3 apart."""
    mask = np.zeros((40, 40), np.uint8)
    mask[5:17, 5:15] = IGNORE_INDEX
    mask[7:15, 7:10] = 3
    mask[12:15, 10:13] = 3
    mask[30:32, 30:32] = 3
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    return image, mask


def test_pasted_object_brings_its_pixels_labels_and_void_outline():
    source_image, source_mask = _source()
    target_image = np.full((24, 24, 3), 7, np.uint8)
    target_mask = np.ones((24, 24), np.uint8)
    kept = (target_image.copy(), target_mask.copy())
    sizes = set()
    for seed in range(20):
        image, mask = paste_object(target_image, target_mask, source_image, source_mask, 3,
                                   np.random.default_rng(seed))
        changed = mask != 1
        # One whole object: the L (33 pixels, with its 87 void pixels) or the 2x2 square (no void around it).
        sizes.add(((mask == 3).sum(), (mask == IGNORE_INDEX).sum()))
        assert ((image != 7).any(axis=2) <= changed).all()  # only the pasted region's pixels changed
        pasted_colours = {tuple(c) for c in image[changed]}
        assert pasted_colours <= {tuple(c) for c in source_image.reshape(-1, 3)}
    assert sizes == {(33, 87), (4, 0)}
    assert np.array_equal(target_image, kept[0]) and np.array_equal(target_mask, kept[1])  # inputs untouched


def test_turned_and_mirrored_pastes_keep_the_object_shape():
    source_image, source_mask = _source()
    source_mask[30:32, 30:32] = 0  # only the L is left
    shapes = set()
    for seed in range(40):
        _, mask = paste_object(np.zeros((30, 30, 3), np.uint8), np.zeros((30, 30), np.uint8), source_image,
                               source_mask, 3, np.random.default_rng(seed))
        rows, cols = np.nonzero(mask == 3)
        shapes.add(tuple(map(tuple, np.argwhere(mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1] == 3))))
    assert len(shapes) == 8  # all four quarter turns, each mirrored or not: the L has no symmetry


def test_nothing_to_paste_or_no_room_leaves_the_target_as_it_is():
    source_image, source_mask = _source()
    image, mask = np.zeros((24, 24, 3), np.uint8), np.zeros((24, 24), np.uint8)
    rng = np.random.default_rng(0)
    assert paste_object(image, mask, source_image, source_mask, 2, rng)[1] is mask  # no class-2 object
    source_mask[30:32, 30:32] = 0
    small_image, small_mask = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)
    assert paste_object(small_image, small_mask, source_image, source_mask, 3, rng)[1] is small_mask  # too big
