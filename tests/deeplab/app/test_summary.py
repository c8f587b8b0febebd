"""The class table of the web app: shares of pixels per class, largest first, with the VOC colours."""
from __future__ import annotations

import numpy as np
import pytest

from deeplab.app import class_shares


def test_shares_are_sorted_percentages_of_present_classes() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[:3] = 2   # 30 %
    mask[3:4] = 1  # 10 %
    mask[9, 9] = 7  # an id beyond the names: named by its number
    rows = class_shares(mask, ["background", "cat", "dog"])
    assert [(name, pytest.approx(share)) for name, share, _ in rows] == [
        ("background", 59.0), ("dog", 30.0), ("cat", 10.0), ("7", 1.0)]
    assert dict((name, colour) for name, _, colour in rows) == {
        "background": "#000000", "cat": "#800000", "dog": "#008000", "7": "#808080"}


def test_blank_and_multiline_names_show_as_in_the_legend() -> None:
    mask = np.array([[0, 1, 1]], np.uint8)
    assert [name for name, _, _ in class_shares(mask, [" ", "a\nb"])] == ["a b", "0"]
