"""CapturedCall on the CPU: the eager path it falls back to, and how it decides what may be captured.

Capture and replay themselves need a CUDA device (scripts/gpu_check.sh runs them).
"""
from __future__ import annotations

import functools
import logging

import pytest
import torch

from superglue_ros.inference.cuda_graph import NO_BUCKET, NOT_CUDA, CapturedCall, shape_key

CUDA = torch.device("cuda")


def scaled_sum(x: torch.Tensor, y: torch.Tensor, scale: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return x * scale, {"sum": x + y}


def test_cpu_inputs_run_eagerly_with_the_functions_results_counted_and_logged_once(caplog):
    call = CapturedCall(functools.partial(scaled_sum, scale=2.0))
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    with caplog.at_level(logging.INFO, logger="superglue_ros.inference.cuda_graph"):
        for _ in range(3):
            scaled, parts = call(x, y)
    assert torch.equal(scaled, x * 2.0) and torch.equal(parts["sum"], x + y)
    assert call.stats == {NOT_CUDA: 3}
    assert sum(NOT_CUDA in record.getMessage() for record in caplog.records) == 1


def test_shape_key_is_shapes_and_dtypes_in_order():
    a, b = torch.zeros(2, 3), torch.zeros(5, dtype=torch.int64)
    assert shape_key([a, b]) == (((2, 3), torch.float32), ((5,), torch.int64))
    assert shape_key([b, a]) != shape_key([a, b]) and shape_key([a.half(), b]) != shape_key([a, b])


def test_only_cuda_inputs_on_one_device_may_be_captured():
    call = CapturedCall(torch.neg)
    key = shape_key([torch.zeros(4)])
    assert call.fallback_reason(key, [torch.device("cpu")]) == NOT_CUDA
    assert call.fallback_reason(key, [CUDA, torch.device("cpu")]) == NOT_CUDA
    assert call.fallback_reason(key, [torch.device("cuda", 0), torch.device("cuda", 1)]) == NOT_CUDA
    assert call.fallback_reason(key, []) == NOT_CUDA
    assert call.fallback_reason(key, [CUDA, CUDA]) is None


def test_declared_buckets_admit_their_shapes_only():
    budget = shape_key([torch.zeros(1, 1024, 256)])
    call = CapturedCall(torch.neg, buckets=[budget])
    assert call.fallback_reason(budget, [CUDA]) is None
    assert call.fallback_reason(shape_key([torch.zeros(1, 1000, 256)]), [CUDA]) == NO_BUCKET
    assert call.fallback_reason(shape_key([torch.zeros(1, 1024, 256, dtype=torch.float16)]), [CUDA]) == NO_BUCKET


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="tensors only"):
        CapturedCall(scaled_sum)(torch.zeros(1), torch.zeros(1), 2.0)
    with pytest.raises(ValueError, match="at least 1"):
        CapturedCall(torch.neg, max_buckets=0)
