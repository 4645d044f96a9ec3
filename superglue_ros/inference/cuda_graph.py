"""Replay a fixed-shape tensor function as a CUDA graph: one launch instead of one per operation.

On a GPU the matching path is bound by kernel launches, not arithmetic. A
CUDA graph records the kernels of one call and replays them with a single
launch, but only for the exact shapes, dtypes and memory it was captured
with. So each shape key (a "bucket") gets its own static input buffers,
filled by copying the caller's tensors in before each replay, and its own
graph; the outputs are the graph's static tensors, which the next replay of
that bucket overwrites (``clone_outputs=True`` hands out copies instead).

Anything that cannot be replayed runs eagerly, with the same results: inputs
not on a CUDA device (the CPU path, tested in CI), a shape key outside the
declared buckets or beyond ``max_buckets``, and a function whose capture
fails (a host synchronisation or a tensor built from Python data inside it,
say). Each fallback is counted in ``stats`` and logged once per reason.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_map

LOG = logging.getLogger(__name__)

ShapeKey = tuple[tuple[tuple[int, ...], torch.dtype], ...]
NOT_CUDA = "eager: inputs not on a CUDA device"
NO_BUCKET = "eager: shape outside the buckets"
CAPTURE_FAILED = "eager: capture failed"
CAPTURED = "captured"
REPLAYED = "replayed"


def shape_key(tensors: Iterable[torch.Tensor]) -> ShapeKey:
    """What a captured graph is specific to: each input's shape and dtype, in order."""
    return tuple((tuple(t.shape), t.dtype) for t in tensors)


@dataclass
class _Captured:
    """One bucket: the graph, the buffers it reads and the outputs it writes."""

    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: Any


class CapturedCall:
    """``CapturedCall(function)(*tensors)``: ``function``'s result, replayed from a CUDA graph when it can be.

    function: takes tensors only (bind settings with ``functools.partial``),
        returns a tensor or a nest (tuple, list, dict) of tensors, always of
        the same shapes for the same input shapes, and has no side effects
        other than its outputs.
    buckets: the shape keys (see :func:`shape_key`) that may be captured;
        None admits any key, up to ``max_buckets`` of them.
    warmup: eager calls on a side stream before capture (lazy initialisation,
        library workspaces and autotuning must happen outside the graph).
    clone_outputs: return copies, which stay valid after the next call.
    """

    def __init__(self, function: Callable[..., Any], buckets: Iterable[ShapeKey] | None = None,
                 max_buckets: int = 4, warmup: int = 3, clone_outputs: bool = False) -> None:
        if max_buckets < 1 or warmup < 1:
            raise ValueError(f"max_buckets and warmup must be at least 1, got {max_buckets} and {warmup}")
        self.function = function
        self.buckets = None if buckets is None else frozenset(buckets)
        self.max_buckets = max_buckets
        self.warmup = warmup
        self.clone_outputs = clone_outputs
        self.stats: Counter[str] = Counter()
        self._captured: dict[ShapeKey, _Captured] = {}
        self._failed: set[ShapeKey] = set()

    def __call__(self, *tensors: torch.Tensor) -> Any:
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError("CapturedCall takes tensors only; bind other arguments with functools.partial")
        key = shape_key(tensors)
        reason = self.fallback_reason(key, [t.device for t in tensors])
        if reason is None and key not in self._captured:
            reason = self._capture(key, tensors)
        if reason is not None:
            self._count(reason)
            return self.function(*tensors)
        captured = self._captured[key]
        for buffer, tensor in zip(captured.inputs, tensors):
            buffer.copy_(tensor, non_blocking=True)
        captured.graph.replay()
        self.stats[REPLAYED] += 1
        return tree_map(torch.clone, captured.outputs) if self.clone_outputs else captured.outputs

    def fallback_reason(self, key: ShapeKey, devices: Iterable[torch.device]) -> str | None:
        """Why a call with this key on these devices runs eagerly, or None when it is (or may be) replayed."""
        devices = set(devices)
        if len(devices) != 1 or next(iter(devices)).type != "cuda":
            return NOT_CUDA
        if key in self._failed:
            return CAPTURE_FAILED
        if key in self._captured:
            return None
        if (self.buckets is not None and key not in self.buckets) or len(self._captured) >= self.max_buckets:
            return NO_BUCKET
        return None

    def _capture(self, key: ShapeKey, tensors: tuple[torch.Tensor, ...]) -> str | None:
        """Warm up on a side stream, capture one call into a graph for this key; the reason if that failed."""
        device = tensors[0].device
        inputs = [t.clone() for t in tensors]
        try:
            with torch.cuda.device(device):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.function(*inputs)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    outputs = self.function(*inputs)
        except RuntimeError as error:
            self._failed.add(key)
            LOG.warning("CUDA graph capture of %s for %s failed, running it eagerly: %s",
                        getattr(self.function, "__name__", "function"), key, error)
            return CAPTURE_FAILED
        self._captured[key] = _Captured(graph, inputs, outputs)
        self.stats[CAPTURED] += 1
        return None

    def _count(self, reason: str) -> None:
        if not self.stats[reason]:
            LOG.info("%s (%s); counted in stats", getattr(self.function, "__name__", "function"), reason)
        self.stats[reason] += 1
