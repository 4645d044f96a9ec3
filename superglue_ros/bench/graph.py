"""``bench --graph``: a camera stream on the fixed path (:class:`StreamGraph`), timed frame by frame.

Each timed frame is one ``push``: upload, the captured step (a graph replay on
CUDA), and the one download, bracketed by a device synchronisation so that the
time is the frame's true end to end. One further frame is counted at the
dispatcher, untimed, to report what the hot section dispatches.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..inference.dispatch_count import DispatchCounter
from ..inference.stream_graph import StreamGraph
from .reference import synchronizer
from .speed import format_dispatch, peak_rss_mb, summarize


def graph_stream(graph: StreamGraph, frames: Sequence[np.ndarray], pairs: int, warmup: int) -> dict[str, Any]:
    """Timings of ``pairs`` stream pairs after ``warmup`` untimed ones (capture happens there), and the
    dispatcher's count of one hot section."""
    wait = synchronizer(graph.device)
    graph.reset()
    graph.push(frames[0])
    seconds, matches = [], []
    for index in range(warmup + pairs):
        frame = frames[1 + index % (len(frames) - 1)]
        wait()
        start = time.perf_counter()
        result = graph.push(frame)
        wait()
        if index >= warmup:
            seconds.append(time.perf_counter() - start)
            matches.append(len(result.matches))
    uploaded = graph.preprocess.upload(frames[1])
    with torch.inference_mode(), DispatchCounter() as counter:
        graph.hot_step(uploaded, *graph.previous)
    median = summarize(seconds, 1000.0)
    report = {"pair_ms": median, "pairs_per_second": 1000.0 / median["median"], "matches_mean": float(np.mean(matches)),
              "dispatch_per_pair": counter.counts.as_dict(), "graph": dict(graph.step.stats) if hasattr(
                  graph.step, "stats") else {}, "peak_rss_mb": peak_rss_mb()}
    if graph.device.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated(graph.device) / 2 ** 20
    return report


def format_graph_stream(report: dict[str, Any], header: str) -> str:
    dispatch = report["dispatch_per_pair"]
    lines = [header,
             f"fixed path, stream: {report['pair_ms']['median']:.2f} ms per pair (p95 {report['pair_ms']['p95']:.2f}),"
             f" {report['pairs_per_second']:.1f} pairs/s, {report['matches_mean']:.0f} matches per pair",
             f"hot section per pair: {format_dispatch(dispatch)}",
             f"graph: {report['graph'] or 'eager (not CUDA)'}; peak RSS {report['peak_rss_mb']:.0f} MB"
             + (f", peak CUDA {report['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in report else "")]
    return "\n".join(lines)
