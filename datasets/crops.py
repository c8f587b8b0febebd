"""Class-focused cropping: albumentations' RandomCrop that can centre the crop on a chosen class's pixels, the
crop half of class-balanced sampling (the sampler picks which image and which class)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise asks PyPI for a newer version
import albumentations as A  # noqa: E402

__all__ = ["ClassFocusedCrop"]


class ClassFocusedCrop(A.RandomCrop):
    """RandomCrop, except that a ``focus_class`` passed with the data and present in the mask centres the crop on
    one of its pixels, jittered by up to a quarter of the crop; every draw comes from the transform's seeded
    generator, so the crop is a function of the sample's seed. Without a focus (-1) it is RandomCrop exactly."""

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        focus, mask = data.get("focus_class", -1), data.get("mask")
        height, width = params["shape"][:2]
        if focus is None or focus < 0 or mask is None or height < self.height or width < self.width:
            return super().get_params_dependent_on_data(params, data)
        rows, cols = np.nonzero(mask == focus)
        if rows.size == 0:  # shrunk away by the random scale: an ordinary crop
            return super().get_params_dependent_on_data(params, data)
        k = self.py_random.randrange(rows.size)
        top = self._start(int(rows[k]), self.height, height)
        left = self._start(int(cols[k]), self.width, width)
        return {"crop_coords": (left, top, left + self.width, top + self.height), "pad_params": None}

    def _start(self, centre: int, crop: int, size: int) -> int:
        """First row (or column) of a ``crop``-long window around ``centre``, jittered, kept inside ``size``."""
        jitter = self.py_random.randint(-(crop // 4), crop // 4)
        return int(np.clip(centre - crop // 2 + jitter, 0, size - crop))
