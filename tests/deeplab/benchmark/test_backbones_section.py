"""Backbones benchmark section: ours beside smp's matching encoder at OS16 and OS8, with ONNX Runtime timings and
the export verdict; misspelt names are one line with suggestions."""
from __future__ import annotations

import pytest

from deeplab.benchmark.backbones import SMP_ENCODERS, backbone_rows
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
