"""Measurements against peers in the same run: latency of models and engines, training throughput.

Candidates are timed interleaved (A B A B ...) so load from other processes hits all of them alike; every
figure is reported with the spread of its repeats and beside a peer measured in the same run.
"""
from __future__ import annotations

from .measure import (SMP_STRIDE, Runner, cpu_flags, eager, markdown, measure, measure_rounds, model_stats,
                      onnxruntime_runner, openvino_runner, smp_model, write_json)

__all__ = ["SMP_STRIDE", "Runner", "cpu_flags", "eager", "markdown", "measure", "measure_rounds", "model_stats",
           "onnxruntime_runner", "openvino_runner", "smp_model", "write_json"]
