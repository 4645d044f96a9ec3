"""The public reference implementation timed beside this package, interleaved, in one process.

A ratio to the reference means something only when both run on the same
machine, at the same moment, on the same frames and weights. The user points
``bench --reference DIR`` at a checkout of magicleap/SuperGluePretrainedNetwork
that they fetched themselves: its ``models`` package is imported from a
temporary copy (so the checkout is never touched and no code of it is
vendored), with the same weight files as this package's models. Each
repetition times one stage of both in turn, in alternating order, so drift
of a shared machine falls on both; the ratio is taken repetition by
repetition.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..inference.dispatch_count import DispatchCounts, count_dispatches
from ..inference.matcher import Matcher
from ..models.superglue import SuperGlue, pad_features
from ..models.superpoint import SuperPoint

T = TypeVar("T")

REFERENCE_PACKAGE = "superglue_reference_models"
OFFICIAL_NAMES = {"superpoint": "superpoint_v1.pth", "superglue": "superglue_indoor.pth"}
COUNTED_STAGES = ("pair", "stream")


@dataclass
class Timing:
    """Seconds of one stage, per repetition, for the reference and for this package."""

    reference: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        ratios = [r / o for r, o in zip(self.reference, self.ours) if o > 0]
        return {"reference_ms": spread(self.reference, 1e3), "ours_ms": spread(self.ours, 1e3),
                "ratio": spread(ratios)}


def spread(values: Sequence[float], scale: float = 1.0) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    scaled = [v * scale for v in values]
    return {"median": statistics.median(scaled), "min": min(scaled), "max": max(scaled)}


class ReferenceImplementation:
    """The reference's SuperPoint and SuperGlue, imported from a temporary copy of ``checkout/models``
    whose ``weights`` folder holds the given state dicts under the official file names, on ``device``."""

    def __init__(self, checkout: str | Path, states: dict[str, dict[str, torch.Tensor]], max_keypoints: int,
                 iterations: int, device: torch.device = torch.device("cpu")) -> None:
        models = Path(checkout) / "models"
        if not (models / "superglue.py").is_file() or not (models / "superpoint.py").is_file():
            raise FileNotFoundError(f"{checkout} is not a checkout of magicleap/SuperGluePretrainedNetwork "
                                    f"(no models/superpoint.py and models/superglue.py)")
        self._folder = tempfile.TemporaryDirectory(prefix="superglue_ros_reference_")
        package = Path(self._folder.name) / REFERENCE_PACKAGE
        (package / "weights").mkdir(parents=True)
        for name in ("__init__.py", "superpoint.py", "superglue.py"):
            if (models / name).is_file():
                shutil.copy(models / name, package / name)
        (package / "__init__.py").touch()
        for name, state in states.items():
            torch.save({key: value.detach().cpu() for key, value in state.items()},
                       package / "weights" / OFFICIAL_NAMES[name])
        sys.path.insert(0, self._folder.name)
        try:
            superpoint = importlib.import_module(f"{REFERENCE_PACKAGE}.superpoint")
            superglue = importlib.import_module(f"{REFERENCE_PACKAGE}.superglue")
        finally:
            sys.path.remove(self._folder.name)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded ... model"
            self.superpoint = superpoint.SuperPoint({"max_keypoints": max_keypoints, "nms_radius": 4,
                                                     "keypoint_threshold": 0.005}).eval()
            self.superglue = superglue.SuperGlue({"weights": "indoor", "sinkhorn_iterations": iterations}).eval()
        self.superpoint.to(device)
        self.superglue.to(device)
        self.log_optimal_transport = superglue.log_optimal_transport
        self.iterations = iterations

    def extract(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reference's SuperPoint on a (1, 1, H, W) image, in its input and output conventions."""
        out = self.superpoint({"image": image})
        return {"keypoints": out["keypoints"][0][None], "scores": out["scores"][0][None],
                "descriptors": out["descriptors"][0][None]}

    def match(self, image0: torch.Tensor, image1: torch.Tensor, features0: dict[str, torch.Tensor],
              features1: dict[str, torch.Tensor], iterations: int | None = None) -> dict[str, torch.Tensor]:
        self.superglue.config["sinkhorn_iterations"] = self.iterations if iterations is None else iterations
        data = {"image0": image0, "image1": image1, **{f"{k}0": v for k, v in features0.items()},
                **{f"{k}1": v for k, v in features1.items()}}
        return self.superglue(data)

    def close(self) -> None:
        self._folder.cleanup()


def _no_wait() -> None:
    """The CPU runs each operation before returning: there is nothing queued to wait for."""


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits until ``device`` has finished the work queued on it, so a timer stops at the true end."""
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    return _no_wait


def timed(function: Callable[[], Any], synchronize: Callable[[], None] = _no_wait) -> float:
    """Seconds of ``function``, bracketed by ``synchronize`` so that earlier and queued work are not charged."""
    synchronize()
    start = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - start


@dataclass
class SideBySide:
    """Interleaved timings per stage and, per counted stage, what one call of each side dispatched."""

    timings: dict[str, Timing]
    counts: dict[str, dict[str, DispatchCounts]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stages": {stage: timing.as_dict() for stage, timing in self.timings.items()},
                "dispatch_per_call": {stage: {side: counts.as_dict() for side, counts in sides.items()}
                                      for stage, sides in self.counts.items()}}


def side_by_side(reference: ReferenceImplementation, matcher: Matcher, frames: Sequence[np.ndarray], repetitions: int,
                 warmup: int = 1, progress: Callable[[], None] | None = None) -> SideBySide:
    """Per stage, ``repetitions`` interleaved timings of both (order alternating), after ``warmup``; then one
    untimed repetition counts what the pair and stream stages of each side dispatch.

    superpoint: one image; gnn: SuperGlue up to the score matrix; sinkhorn: the
    optimal transport of that matrix; pair: two fresh frames matched; stream:
    a new frame matched against the previous one, whose features are kept.
    On the fixed backend, superpoint is the fixed extraction from the 8-bit
    frame (upload and conversion included) and gnn and sinkhorn are one stage,
    superglue (the fixed SuperGlue on two frames' slots against the
    reference's SuperGlue on its features), since the fixed path runs them as
    one call. Both run on the matcher's device; every timed call is bracketed
    by a synchronisation of that device.
    """
    result = SideBySide({})
    synchronize = synchronizer(matcher.device)
    with torch.inference_mode():
        for repetition in range(warmup + repetitions + 1):
            index = repetition % (len(frames) - 1)  # frames are made on demand: convert only these two
            image0, image1 = (torch.from_numpy(frames[i].astype(np.float32) / 255.0).to(matcher.device)
                              for i in (index, index + 1))
            ref0, ref1 = reference.extract(image0[None, None]), reference.extract(image1[None, None])
            stages = model_stages(reference, matcher, (frames[index], frames[index + 1]), (image0, image1),
                                  (ref0, ref1))
            stages["pair"] = (lambda: reference.match(image0[None, None], image1[None, None],
                                                      reference.extract(image0[None, None]),
                                                      reference.extract(image1[None, None])),
                              lambda: matcher.match(frames[index], frames[index + 1]))
            stages["stream"] = (lambda: reference.match(image0[None, None], image1[None, None], ref0,
                                                        reference.extract(image1[None, None])),
                                lambda: matcher.match(frames[index], frames[index + 1], ("stream", index),
                                                      ("stream", index + 1 + repetition * len(frames))))
            matcher.match(frames[index], frames[index], ("stream", index), ("stream", index))  # cache frame 0
            if repetition == warmup + repetitions:
                result.counts = {stage: {"reference": count_dispatches(stages[stage][0])[1],
                                         "ours": count_dispatches(stages[stage][1])[1]} for stage in COUNTED_STAGES}
                break
            for stage, (theirs, ours) in stages.items():
                first, second = (theirs, ours) if repetition % 2 == 0 else (ours, theirs)
                seconds = timed(first, synchronize), timed(second, synchronize)
                if repetition >= warmup:
                    t_ref, t_ours = seconds if repetition % 2 == 0 else seconds[::-1]
                    timing = result.timings.setdefault(stage, Timing())
                    timing.reference.append(t_ref)
                    timing.ours.append(t_ours)
            if progress is not None:
                progress()
    return result


Stage = tuple[Callable[[], Any], Callable[[], Any]]


def model_stages(reference: ReferenceImplementation, matcher: Matcher, frames: tuple[np.ndarray, np.ndarray],
                 images: tuple[torch.Tensor, torch.Tensor],
                 features: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]) -> dict[str, Stage]:
    """The per-model stages of one repetition: (reference, ours) calls, in the order they are timed."""
    image0, image1 = (image[None, None] for image in images)
    extract = (lambda: reference.extract(image1))
    fixed = matcher.fixed
    if fixed is not None:
        network_hw = fixed.network_shape(frames[1].shape[:2])
        slots0, slots1 = (fixed.extract(fixed.upload(frame)) for frame in frames)
        return {"superpoint": (extract, lambda: fixed.extract(fixed.upload(frames[1]))),
                "superglue": (lambda: reference.match(image0, image1, *features),
                              lambda: fixed.match(slots0, slots1, network_hw))}
    superpoint: SuperPoint = matcher.extractor
    superglue: SuperGlue = matcher.superglue
    padded0, padded1 = (pad_features([superpoint.extract(image)], matcher.device)[:4] for image in images)
    raw = in_precision(matcher, lambda: superglue.score_stages(*padded0, *padded1))()["raw_scores"]
    return {"superpoint": (extract, lambda: superpoint.extract(images[1])),
            "gnn": (lambda: reference.match(image0, image1, *features, iterations=0),
                    in_precision(matcher, lambda: superglue.score_stages(*padded0, *padded1))),
            "sinkhorn": (lambda: reference.log_optimal_transport(raw, reference.superglue.bin_score,
                                                                 reference.iterations),
                         in_precision(matcher, lambda: superglue.optimal_transport(raw)))}


def in_precision(matcher: Matcher, call: Callable[[], T]) -> Callable[[], T]:
    """``call`` under the matcher's precision, as its pair and stream stages run SuperGlue (fp16 and bf16
    through autocast)."""
    def run() -> T:
        with matcher._autocast():
            return call()
    return run


def format_side_by_side(result: SideBySide, header: str) -> str:
    lines = [header, "", f"{'stage':<12}{'reference ms':>22}{'ours ms':>22}{'reference / ours':>26}"]
    for stage, timing in result.timings.items():
        row = timing.as_dict()
        cells = [f"{row[k]['median']:.1f} [{row[k]['min']:.0f}-{row[k]['max']:.0f}]"
                 for k in ("reference_ms", "ours_ms")]
        ratio = row["ratio"]
        lines.append(f"{stage:<12}{cells[0]:>22}{cells[1]:>22}"
                     f"{ratio['median']:>13.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]")
    if result.counts:
        lines += ["", f"{'per call':<12}{'reference ops/syncs':>22}{'ours ops/syncs':>22}"]
        for stage, sides in result.counts.items():
            cells = [f"{sides[side].total_operations}/{sides[side].total_syncs}" for side in ("reference", "ours")]
            lines.append(f"{stage:<12}{cells[0]:>22}{cells[1]:>22}")
    return "\n".join(lines)
