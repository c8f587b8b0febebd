"""tools/benchmark_train.py: flags no training step or loader can use, and a missing data root, are one line and
exit 2 before anything is timed."""
from __future__ import annotations

import pytest

from tools import benchmark_train


@pytest.fixture
def untimed(monkeypatch):
    """Timing replaced by a failure: a refusal has to come before it."""
    def never(**kwargs):
        raise AssertionError("timing started")

    monkeypatch.setattr(benchmark_train, "train_step_rates", never)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps: must be at least 1, got 0"),
    (["--rounds", "0"], "--rounds: must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 2; in training, the BatchNorm after ASPP's "
                            "image-level pooling needs more than one value per channel"),
    (["--batch-size", "1"], "--batch-size 1: must be at least 2; in training, the BatchNorm after ASPP's "
                            "image-level pooling needs more than one value per channel"),
    (["--crop-size", "0"], "--crop-size: must be at least 1, got 0"),
    (["--crop-size", "300"], "--crop-size 300: must be a multiple of 16, as smp's DeepLabV3Plus needs"),
    (["--threads", "0"], "--threads: must be at least 1, got 0"),
    (["--workers", "-1"], "--workers: must be 0 or more, got -1"),
    (["--loader-batches", "0"], "--loader-batches: must be at least 1, got 0"),
])
def test_bad_flags_are_one_line_before_any_timing(flags, message, untimed, capsys):
    assert benchmark_train.main(flags) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"


def test_missing_data_root_is_refused_before_any_timing(tmp_path, untimed, capsys):
    assert benchmark_train.main(["--data-root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'none'}") and len(err.splitlines()) == 1
