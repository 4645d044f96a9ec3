"""The one matching pipeline: preprocess, extract, match, homography, with one set of stage names.

The node, ``eval`` and ``bench`` all run pairs through :func:`match_pairs`,
so a stage timed in a benchmark is the stage a robot runs and an evaluation
scores. Stage times are seconds per pair; a batch of pairs (one per camera)
shares the batch's extraction and matching times.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..geometry.homography import METHOD, MIN_MATCHES, THRESHOLD, HomographyEstimate, estimate_homography
from .matcher import Matcher, PairMatch, PairRequest

# decode: message or file to pixels (the caller's); preprocess: gray, resize, upload; extract: keypoints
# of frames not cached; match: SuperGlue (split into gnn + sinkhorn when profiling); geometry: homography.
STAGES = ("decode", "preprocess", "extract", "match", "geometry")
MATCH_PARTS = ("gnn", "sinkhorn")


@dataclass(frozen=True)
class HomographySettings:
    """How the homography of each pair is estimated and judged valid."""

    method: str = METHOD.default
    threshold: float = THRESHOLD.default
    min_matches: int = MIN_MATCHES.default

    def __post_init__(self) -> None:
        METHOD.check(self.method)
        object.__setattr__(self, "threshold", THRESHOLD.check(self.threshold))
        MIN_MATCHES.check(self.min_matches)


@dataclass(frozen=True)
class PairOutcome:
    """A matched pair, its homography and the seconds each stage took."""

    pair: PairMatch
    homography: HomographyEstimate
    timings: dict[str, float]

    @property
    def total_seconds(self) -> float:
        return sum(self.timings[stage] for stage in STAGES)


def match_pairs(matcher: Matcher, requests: Sequence[PairRequest], homography: HomographySettings,
                decode_seconds: float = 0.0) -> list[PairOutcome]:
    """Match the pairs as one batch, then fit each pair's homography."""
    pairs = matcher.match_batch(requests)
    outcomes = []
    for pair in pairs:
        start = time.perf_counter()
        points0, points1, _ = pair.matched_points()
        estimate = estimate_homography(points0, points1, homography.method, homography.threshold,
                                       homography.min_matches)
        timings = {"decode": decode_seconds, **{stage: pair.timings.get(stage, 0.0) for stage in STAGES[1:4]},
                   "geometry": time.perf_counter() - start}
        timings.update({part: pair.timings[part] for part in MATCH_PARTS if part in pair.timings})
        outcomes.append(PairOutcome(pair, estimate, timings))
    return outcomes


def match_pair(matcher: Matcher, request: PairRequest, homography: HomographySettings,
               decode_seconds: float = 0.0) -> PairOutcome:
    return match_pairs(matcher, [request], homography, decode_seconds)[0]
