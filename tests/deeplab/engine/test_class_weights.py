"""Class weights: ``auto`` against a hand computation, bounded, finite for absent classes; weight files and
their bad forms (wrong number of lines, negative or non-number weights) as one line naming the file."""
from __future__ import annotations

import numpy as np
import pytest

from deeplab.engine.class_weights import WEIGHT_BOUND, auto_class_weights, read_class_weights, resolve_class_weights
from deeplab.errors import UserError


def test_auto_weights_against_a_hand_computation():
    # Shares 0.9, 0.09, 0.01 -> share^-1/2 = 1.0541, 3.3333, 10; the pixel-weighted mean of those is
    # 0.9 * 1.0541 + 0.09 * 3.3333 + 0.01 * 10 = 1.3487, and dividing by it gives 0.7816, 2.4715, 7.4146.
    weights = auto_class_weights(np.array([900, 90, 10]))
    assert weights == pytest.approx([0.78157, 2.47155, 7.41464], rel=1e-4)
    assert (np.array([0.9, 0.09, 0.01]) * weights).sum() == pytest.approx(1.0)


def test_auto_weights_are_bounded_and_finite_for_absent_classes():
    weights = auto_class_weights(np.array([10**7, 1, 0]))
    assert np.isfinite(weights).all()
    assert weights.max() == WEIGHT_BOUND and weights[2] == WEIGHT_BOUND and weights.min() >= 1 / WEIGHT_BOUND


def test_weight_file_one_line_per_class(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("0.5\n# the rare one\n2   # comment\n\n3e0\n")
    assert read_class_weights(path, 3).tolist() == [0.5, 2.0, 3.0]
    assert resolve_class_weights(str(path), num_classes=3).tolist() == [0.5, 2.0, 3.0]
    assert resolve_class_weights("none", num_classes=3) is None


@pytest.mark.parametrize("text, message", [
    ("1\n2\n", r"w.txt: 2 weights, but the data has 3 classes"),
    ("1\n-2\n3\n", r"w.txt: line 2: '-2' is not a non-negative number"),
    ("1\nheavy\n3\n", r"w.txt: line 2: 'heavy' is not a non-negative number"),
    ("1\nnan\n3\n", r"w.txt: line 2: 'nan' is not a non-negative number"),
    ("0\n0\n0\n", r"w.txt: every weight is 0"),
])
def test_bad_weight_files(tmp_path, text, message):
    path = tmp_path / "w.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_class_weights(path, 3)


def test_missing_weight_file(tmp_path):
    with pytest.raises(UserError, match=r"--class-weights .*nope.txt: cannot read"):
        read_class_weights(tmp_path / "nope.txt", 3)


def test_weight_file_from_windows_editors(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes(b"\xef\xbb\xbf1.0\r\n2\r\n")  # Notepad's UTF-8 with a byte-order mark
    assert read_class_weights(path, 2).tolist() == [1.0, 2.0]
    path.write_text("1.0\n2\n", encoding="utf-16")  # PowerShell's `>`
    with pytest.raises(UserError, match=r"^--class-weights .*w\.txt: not UTF-8 text \(byte 0xff at position 0\)"):
        read_class_weights(path, 2)
