"""Several cameras through one matcher: their pairs as one batch against the same pairs one by one.

Each round gives every camera a new frame to match against its previous one
(cached, as the node keeps it), the way the node's worker finds one pending
frame per camera. One by one, camera k's pair is done after the k pairs
before it; batched, all are done when the batch is. The rounds alternate
the two orders on the same frames, so a shared machine's drift falls on both.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..inference.matcher import Matcher, PairRequest
from ..inference.pipeline import HomographySettings, match_pairs


def camera_rounds(matcher: Matcher, frames: Sequence[np.ndarray], cameras: int, rounds: int, warmup: int = 1,
                  progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Pairs per second and per-camera latency, batched and one by one, and the throughput ratio."""
    settings = HomographySettings()
    batched, single = [], []
    latency_batched, latency_single = [], []
    for round_index in range(warmup + rounds):
        requests = [[PairRequest(frames[(c + round_index) % len(frames)], frames[(c + round_index + 1) % len(frames)],
                                 (order, c, round_index), (order, c, round_index + 1)) for c in range(cameras)]
                    for order in ("batch", "single")]
        for order in (("batch", "single") if round_index % 2 == 0 else ("single", "batch")):
            pending = requests[0] if order == "batch" else requests[1]
            for request in pending:  # the previous frames are cached, as in a stream
                matcher.match(request.image0, request.image0, request.key0, request.key0)
            start = time.perf_counter()
            if order == "batch":
                match_pairs(matcher, pending, settings)
                finished = [time.perf_counter() - start] * cameras
            else:
                finished = []
                for request in pending:
                    match_pairs(matcher, [request], settings)
                    finished.append(time.perf_counter() - start)
            if round_index >= warmup:
                (batched if order == "batch" else single).append(finished[-1])
                (latency_batched if order == "batch" else latency_single).append(statistics.mean(finished))
        if progress is not None:
            progress()
    matcher.clear_cache()
    ratios = [s / b for s, b in zip(single, batched)]
    return {"cameras": cameras, "rounds": rounds,
            "pairs_per_second_batched": cameras / statistics.median(batched),
            "pairs_per_second_one_by_one": cameras / statistics.median(single),
            "throughput_ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "latency_ms_batched": 1e3 * statistics.median(latency_batched),
            "latency_ms_one_by_one": 1e3 * statistics.median(latency_single)}


def format_camera_rounds(results: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'cameras':<9}{'pairs/s batched':>17}{'one by one':>12}{'ratio':>20}{'latency ms batched':>21}"
             f"{'one by one':>12}"]
    for r in results:
        lines.append(f"{r['cameras']:<9}{r['pairs_per_second_batched']:>17.2f}{r['pairs_per_second_one_by_one']:>12.2f}"
                     f"{r['throughput_ratio']:>9.2f}x [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}]"
                     f"{r['latency_ms_batched']:>21.1f}{r['latency_ms_one_by_one']:>12.1f}")
    return "\n".join(lines)
