"""Backbones benchmark section: ours beside smp's matching encoder at OS16 and OS8, with ONNX Runtime timings and
the export verdict; misspelt names are one line with suggestions."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from deeplab.benchmark.backbones import SMP_ENCODERS, backbone_rows, onnx_runner
from tools import benchmark


@pytest.mark.slow
def test_rows_cover_both_strides_with_smp_and_onnx() -> None:
    rows = backbone_rows(size=64, warmup=0, repeats=1, names=["blazenet", "mobilenetv4_conv_small"])
    models = [row["model"] for row in rows]
    assert models == ["ours blazenet OS16", "ours blazenet OS8",
                      "ours mobilenetv4_conv_small OS16", "smp tu-mobilenetv4_conv_small OS16",
                      "ours mobilenetv4_conv_small OS8", "smp tu-mobilenetv4_conv_small OS8"]
    ours = [row for row in rows if row["model"].startswith("ours")]
    assert all(row["onnx"] == "ok" and row["ort_ms"] > 0 and row["latency_ms"] > 0 for row in ours)
    # Dilation keeps the parameters and costs compute.
    assert rows[0]["params_m"] == rows[1]["params_m"] and rows[1]["gmacs"] > rows[0]["gmacs"]


def test_smp_encoders_exist_for_registered_backbones() -> None:
    from backbones import list_backbones

    assert set(SMP_ENCODERS) <= set(list_backbones())


def test_misspelt_backbone_is_one_line_with_suggestions(capsys) -> None:
    assert benchmark.main(["--section", "backbones", "--backbones", "blazenet", "mobilevit"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backbones: unknown backbone 'mobilevit'; did you mean mobilevit_s or mobilevit_xs?")


class _ScaledByWidth(nn.Module):
    """Multiplies by its input's width read as a Python int: the traced export bakes in the tracing width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * int(x.shape[-1])


class _ReshapedByHeight(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 3, int(x.shape[2]), -1)


def test_onnx_verdict_names_exports_that_only_work_at_the_tracing_size() -> None:
    assert onnx_runner(nn.Conv2d(3, 2, 3, padding=1))[1] == "ok"
    runner, verdict = onnx_runner(_ScaledByWidth())
    assert runner is None and verdict.startswith("wrong at 97x131 (max abs logit diff")
    runner, verdict = onnx_runner(_ReshapedByHeight())
    assert runner is None and verdict.startswith("fails at 97x131: ")
