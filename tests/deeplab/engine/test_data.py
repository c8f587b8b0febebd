"""The training sampler: every epoch a permutation, resumable mid-epoch with the same stream."""
from __future__ import annotations

from itertools import islice

from deeplab.engine.data import SeededSampler


def test_sampler_resumed_mid_epoch_continues_the_same_stream():
    full = list(islice(SeededSampler(7, seed=3), 30))
    assert sorted(i for i, _ in full[:7]) == list(range(7))  # each epoch is a permutation
    assert [i for i, _ in full[:7]] != [i for i, _ in full[7:14]]  # reshuffled every epoch
    assert list(islice(SeededSampler(7, seed=3, start=11), 19)) == full[11:]
    assert list(islice(SeededSampler(7, seed=4), 30)) != full
