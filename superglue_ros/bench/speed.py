"""Speed and memory of the matching pipeline, measured the way a robot runs it.

``pair`` mode matches two fresh frames each time (SuperPoint twice per pair);
``stream`` mode feeds a sequence and matches each new frame with the previous
one, whose features come from the cache (SuperPoint once per pair), which is
what the node does in sequential mode. Numbers are printed, never asserted.
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..data.homographies import sample_homography, warp_image
from ..inference.dispatch_count import DispatchCounter, DispatchCounts
from ..inference.fixed_path import FixedPath
from ..models.sinkhorn_op import LAYOUT_TIMINGS
from ..metrics import summary
from ..inference.matcher import Matcher, PairMatch, PairRequest
from ..inference.pipeline import MATCH_PARTS, STAGES, HomographySettings, PairOutcome, match_pair
from ..files.images import DEFAULT_MAX_PIXELS, image_files, read_image

TIMED_STAGES = (*STAGES[1:], *MATCH_PARTS)  # frames are already decoded
PROFILE_EVERY = 4  # on CUDA, one timed pair in this many is timed stage by stage


@dataclass
class BenchResult:
    """Everything one benchmark run measured; ``as_dict`` is the JSON schema."""

    config: dict[str, Any]
    stage_seconds: dict[str, list[float]] = field(default_factory=dict)
    pair_seconds: list[float] = field(default_factory=list)
    keypoints: list[int] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    superglue_flop: list[float] = field(default_factory=list)
    agreement: float | None = None
    peak_rss_mb: float = 0.0
    cuda_max_allocated_mb: float | None = None
    dispatch: DispatchCounts | None = None
    hot_section: DispatchCounts | None = None
    graphs: dict[str, int] | None = None
    sinkhorn_layouts: dict[str, dict[str, float]] | None = None

    def as_dict(self) -> dict[str, Any]:
        pair = summarize(self.pair_seconds)
        superglue = [g + s for g, s in zip(self.stage_seconds.get("gnn", []), self.stage_seconds.get("sinkhorn", []))]
        gflops = [f / t / 1e9 for f, t in zip(self.superglue_flop, superglue) if t > 0]
        return {
            "schema_version": 3,
            "config": self.config,
            "stages_ms": {name: summarize(values, 1e3) for name, values in self.stage_seconds.items()},
            "pair_ms": summarize(self.pair_seconds, 1e3),
            "timed_pairs": {"whole": len(self.pair_seconds), "by_stage": len(self.superglue_flop)},
            "pairs_per_second": 1.0 / pair["median"] if pair["median"] else None,
            "keypoints_mean": float(np.mean(self.keypoints)) if self.keypoints else 0.0,
            "matches_mean": float(np.mean(self.matches)) if self.matches else 0.0,
            "superglue_gflops": statistics.median(gflops) if gflops else None,
            "agreement_with_exact": self.agreement,
            "peak_rss_mb": self.peak_rss_mb,
            "cuda_max_allocated_mb": self.cuda_max_allocated_mb,
            "dispatch_per_pair": self.dispatch.as_dict() if self.dispatch is not None else None,
            "hot_section_per_pair": self.hot_section.as_dict() if self.hot_section is not None else None,
            "graphs": self.graphs,
            "sinkhorn_layouts_ms": self.sinkhorn_layouts,
        }


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float | None]:
    """Median and 95th percentile of the timings times ``scale`` (None when there are none)."""
    stats = summary(np.asarray(values, dtype=np.float64) * scale)
    return {"median": stats["median"], "p95": stats["p95"]}


def superglue_flop(n: int, m: int, dim: int, layers: Sequence[str], iterations: int) -> float:
    """Floating-point operations of one SuperGlue pair (multiply-add = 2), dominant terms only.

    Per layer and keypoint: Q/K/V (3 D^2), merge (D^2) and the two-layer MLP
    (4 D^2 + 2 D^2) products; attention costs 2 * queries * keys * D per image
    (scores and weighted sum). Then the final projection, the score matrix and
    two matrix-vector products per Sinkhorn iteration. These are the model's
    nominal operations, comparable across implementations: this one folds the
    merge projection into the MLP and so executes about 5% fewer.
    """
    per_point = 2 * 10 * dim * dim
    total = 0.0
    for kind in layers:
        attention = 2 * (n * n + m * m) if kind == "self" else 4 * n * m
        total += per_point * (n + m) + 2 * attention * dim
    total += 2 * dim * dim * (n + m) + 2 * n * m * dim
    return total + 4.0 * (n + 1) * (m + 1) * iterations


class Frames(Sequence[np.ndarray]):
    """``count`` grey frames of size (W, H), each made when first asked for: a run of any length holds a
    few frames, not all of them. The folder's images in name order (repeated), else a synthetic sequence:
    random warps of one texture, frame i a pure function of (seed, i)."""

    def __init__(self, folder: str | os.PathLike | None, count: int, size: tuple[int, int], seed: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS, keep: int = 8) -> None:
        """``keep``: frames held at once (a pair, or the cameras of a round and the next frame)."""
        self.count, self.size, self.seed, self.max_pixels, self.keep = count, size, seed, max_pixels, keep
        self.paths = image_files(folder) if folder is not None else None
        self.base = None if self.paths else textured_image(np.random.default_rng(seed), size[1], size[0])
        self.recent: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= index < self.count:
            raise IndexError(index)
        if index not in self.recent:
            if len(self.recent) >= self.keep:
                del self.recent[next(iter(self.recent))]
            self.recent[index] = self.make(index)
        return self.recent[index]

    def make(self, index: int) -> np.ndarray:
        width, height = self.size
        if self.paths:
            image = read_image(self.paths[index % len(self.paths)], self.max_pixels, cv2.IMREAD_GRAYSCALE)
            return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        rng = np.random.default_rng((self.seed, index))
        return warp_image(self.base, sample_homography(rng, height, width, strength=0.3), rng)


def load_frames(folder: str | os.PathLike | None, count: int, size: tuple[int, int], seed: int = 0,
                max_pixels: int = DEFAULT_MAX_PIXELS, keep: int = 8) -> Frames:
    """``count`` grey frames of size (W, H), made lazily (see :class:`Frames`); a folder without images is
    an error now, not at the first pair."""
    return Frames(folder, count, size, seed, max_pixels, keep)


def textured_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A seeded scene with corners and texture at several scales, so SuperPoint finds plenty."""
    image = np.full((height, width), 128, np.uint8)
    for _ in range(120):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(8, max(9, width // 6))), int(rng.integers(8, max(9, height // 6)))
        cv2.rectangle(image, (x, y), (x + w, y + h), int(rng.integers(0, 256)), -1)
        cv2.circle(image, (int(rng.integers(0, width)), int(rng.integers(0, height))),
                   int(rng.integers(4, 40)), int(rng.integers(0, 256)), -1)
    noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width)), (0, 0), 1.5)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def pairs_for(frames: Sequence[np.ndarray], mode: str) -> list[tuple[int, int]]:
    """Frame index pairs: consecutive frames in stream mode, disjoint neighbours in pair mode."""
    if mode == "stream":
        return [(i, i + 1) for i in range(len(frames) - 1)]
    return [(i, i + 1) for i in range(0, len(frames) - 1, 2)]


def run_pair(matcher: Matcher, frames: Sequence[np.ndarray], i: int, j: int, keyed: bool,
             ) -> tuple[PairOutcome, float]:
    """Frames i and j (keyed: reuse cached features) through the pipeline; the outcome and its seconds."""
    image0, image1 = frames[i], frames[j]  # made before the clock starts
    start = time.perf_counter()
    outcome = match_pair(matcher, PairRequest(image0, image1, *((i, j) if keyed else (None, None))),
                         HomographySettings())
    return outcome, time.perf_counter() - start


def benchmark(matcher: Matcher, frames: Sequence[np.ndarray], mode: str, warmup: int,
              config: dict[str, Any], exact: Matcher | None = None,
              progress: Callable[[int, int], None] | None = None) -> BenchResult:
    """Warm up on the first pairs, then time every remaining pair; ``exact`` adds the agreement figure.

    ``config`` is recorded verbatim in the result (what was run, on what machine).
    """
    pairs = pairs_for(frames, mode)
    if len(pairs) <= warmup:
        raise ValueError(f"{len(frames)} frames give {len(pairs)} pairs in {mode} mode; need more than "
                         f"the {warmup} warm-up pairs")
    keyed = mode == "stream"
    superglue_config = matcher.superglue.config
    result = BenchResult(config=config)
    if matcher.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(matcher.device)
    agreements: list[tuple[int, int]] = []
    profile = matcher.profile
    for index, (i, j) in enumerate(pairs):
        staged, whole = timed_as(matcher.device, index - warmup)
        matcher.profile = staged
        try:
            outcome, seconds = run_pair(matcher, frames, i, j, keyed)
        finally:
            matcher.profile = profile
        pair = outcome.pair
        if progress is not None:
            progress(index + 1, len(pairs))
        if index < warmup:
            continue
        n, m = len(pair.features0), len(pair.features1)
        result.keypoints += [n, m]
        result.matches.append(pair.result.num_matches)
        if whole:
            result.pair_seconds.append(seconds)
        if staged:
            for stage in TIMED_STAGES:
                result.stage_seconds.setdefault(stage, []).append(outcome.timings.get(stage, 0.0))
            result.superglue_flop.append(superglue_flop(
                n, m, superglue_config["descriptor_dim"], superglue_config["GNN_layers"],
                superglue_config["sinkhorn_iterations"]))
        if exact is not None:
            agreements.append(match_agreement(pair, exact.match(frames[i], frames[j])))
    if agreements:
        common, total = map(sum, zip(*agreements))
        result.agreement = common / total if total else 1.0
    result.peak_rss_mb = peak_rss_mb()
    if matcher.device.type == "cuda":
        result.cuda_max_allocated_mb = torch.cuda.max_memory_allocated(matcher.device) / 2**20
    if matcher.fixed is not None:
        result.graphs = matcher.fixed.stats()
        result.hot_section = count_fixed_section(matcher.fixed, frames)
        result.sinkhorn_layouts = {f"{device} {shape} x{iterations}": timings
                                   for (device, shape, iterations), timings in LAYOUT_TIMINGS.items()} or None
    result.dispatch = count_pair(matcher, frames, mode)
    return result


def timed_as(device: torch.device, timed_index: int) -> tuple[bool, bool]:
    """Whether the ``timed_index``-th timed pair (negative: a warm-up pair) gives stage times, and whether it
    gives its whole time.

    A stage's time on CUDA needs a synchronisation at its end, which stops the host from queueing the next
    stage while the GPU works: a pair timed so is slower than the pipeline runs. So on CUDA one timed pair
    in PROFILE_EVERY gives its stages (the last of each PROFILE_EVERY, so that every run has whole times)
    and the others their whole time, unsynchronised but for the download of the result. Elsewhere the host
    waits for each stage anyway, and every pair gives both."""
    if device.type != "cuda":
        return True, True
    staged = timed_index >= 0 and timed_index % PROFILE_EVERY == PROFILE_EVERY - 1
    return staged, not staged


def count_pair(matcher: Matcher, frames: Sequence[np.ndarray], mode: str) -> DispatchCounts:
    """What one pair of the timed path dispatches, counted on an extra untimed pair (counting is slow).

    In stream mode the first frame comes from the cache, as it does when timed.
    """
    settings = HomographySettings()
    keys = [("dispatch count", index) for index in range(3)]
    request = PairRequest(frames[0], frames[1])
    if mode == "stream":
        match_pair(matcher, PairRequest(frames[0], frames[1], keys[0], keys[1]), settings)
        request = PairRequest(frames[1], frames[2], keys[1], keys[2])
    with DispatchCounter() as counter:
        match_pair(matcher, request, settings)
    return counter.counts


def count_fixed_section(fixed: FixedPath, frames: Sequence[np.ndarray]) -> DispatchCounts | None:
    """What the fixed backend dispatches between the upload and the download of one stream pair: the new
    frame's extraction and its matching against the previous frame's slots (None when frames do not fit)."""
    if not (fixed.fits(frames[1]) and fixed.fits(frames[2])):
        return None
    previous = fixed.extract(fixed.upload(frames[1]))
    uploaded = fixed.upload(frames[2])
    with DispatchCounter() as counter:
        fixed.match(previous, fixed.extract(uploaded), fixed.network_shape(frames[2].shape[:2]))
    return counter.counts


def format_dispatch(counts: dict[str, Any]) -> str:
    """One line of :meth:`DispatchCounts.as_dict`: totals, then what synchronised and what was host-built."""
    line = (f"{counts['operations']} dispatched operations ({counts['views']} of them views), "
            f"{counts['syncs']} host synchronisations, "
            f"{counts['host_built']} host-built tensors")
    details = [f"{name} x{count}" for name, count in {**counts["sync_ops"], **counts["host_built_ops"]}.items()]
    return line + (f" ({', '.join(details)})" if details else "")


def match_agreement(candidate: PairMatch, exact: PairMatch) -> tuple[int, int]:
    """(matches of ``exact`` that ``candidate`` also found, matches of ``exact``).

    Matches are compared as pairs of keypoint positions, not indices: a
    different precision may reorder (or slightly move) the top-k keypoints.
    """
    def pairs(match: PairMatch) -> set[tuple[int, int, int, int]]:
        points0, points1, _ = match.matched_points()
        rounded = np.rint(np.concatenate([points0, points1], axis=1)).astype(np.int64)
        return set(map(tuple, rounded))

    reference = pairs(exact)
    return len(reference & pairs(candidate)), len(reference)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {torch.get_num_threads()} threads"


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of :meth:`BenchResult.as_dict`. With ``speed_only`` the weights were stand-ins
    (deterministic, untrained): their match counts mean nothing and are not shown as a result."""
    config, speed_only = report["config"], report.get("speed_only", False)
    lines = [", ".join(f"{key}={value}" for key, value in config.items()), "",
             f"{'stage':<14}{'median ms':>12}{'p95 ms':>12}"]
    if speed_only:
        lines[1:1] = ["measured: speed and memory only (deterministic weights, not trained: no match quality; "
                      "--weights sift_open or the official weights also measure matches)", ""]
    for name, values in report["stages_ms"].items():
        lines.append(f"{name:<14}{values['median']:>12.1f}{values['p95']:>12.1f}")
    pair = report["pair_ms"]
    lines.append(f"{'pair total':<14}{pair['median']:>12.1f}{pair['p95']:>12.1f}")
    timed = report.get("timed_pairs")
    if timed and timed["whole"] != timed["by_stage"]:
        lines.append(f"(stages from {timed['by_stage']} pairs timed stage by stage, synchronised after each; the "
                     f"total from {timed['whole']} others)")
    lines.append("")
    lines.append(f"pairs/s: {report['pairs_per_second']:.2f}")
    matches = "not measured (deterministic weights)" if speed_only else f"{report['matches_mean']:.0f}"
    lines.append(f"keypoints per image: {report['keypoints_mean']:.0f}, matches per pair: {matches}")
    if report["superglue_gflops"] is not None:
        lines.append(f"SuperGlue: {report['superglue_gflops']:.0f} GFLOP/s")
    if report["agreement_with_exact"] is not None:
        lines.append(f"matches identical to exact fp32: {100 * report['agreement_with_exact']:.1f}%")
    lines.append(f"peak RSS: {report['peak_rss_mb']:.0f} MB")
    if report["cuda_max_allocated_mb"] is not None:
        lines.append(f"CUDA max allocated: {report['cuda_max_allocated_mb']:.0f} MB")
    if report["dispatch_per_pair"] is not None:
        lines.append(f"per pair: {format_dispatch(report['dispatch_per_pair'])}")
    if report.get("hot_section_per_pair") is not None:
        lines.append(f"fixed backend, upload to download per stream pair: "
                     f"{format_dispatch(report['hot_section_per_pair'])}")
    if report.get("graphs") is not None:
        lines.append(f"fixed backend calls: {report['graphs']}")
    for shape, timings in (report.get("sinkhorn_layouts_ms") or {}).items():
        times = ", ".join(f"{layout} {ms:.3f}" for layout, ms in timings.items()) or "not timed"
        lines.append(f"Sinkhorn on {shape}, ms per graph replay: {times}")
    return "\n".join(lines)
