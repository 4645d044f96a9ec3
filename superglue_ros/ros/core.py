"""Everything the matcher node does between receiving images and publishing, without ROS.

The rclpy node (``ros/node.py``) only converts messages and calls this: image
decoding, choosing the reference frame (previous frame, keyframe or the other
camera), matching, the homography, message contents, run-time parameter
updates and the counters behind /diagnostics. Bad input is rejected with a
reason and counted, never raised into the executor.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..geometry.homography import HomographyEstimate, estimate_homography
from .image_codec import ImageDecodeError, decode_image
from ..inference.matcher import Matcher, PairMatch
from .messages import Stamp, homography_fields, matches_fields
from .pairing import ApproximateSync, StampedFrame
from ..parameters import DEFAULTS, coerce, resolve, validate
from ..viz import draw_matches

SUPERPOINT_PARAMETERS = ("max_keypoints", "keypoint_threshold", "nms_radius")
SUPERGLUE_PARAMETERS = ("sinkhorn_iterations", "match_threshold")
OK, WARN, ERROR = 0, 1, 2


class FrameRejected(ValueError):
    """An input frame or pair that cannot be matched; the message says why (for a throttled warning)."""


@dataclass
class Counters:
    """Monotonic totals since start; /diagnostics reports them and their change per period."""

    received: int = 0
    published: int = 0
    dropped_busy: int = 0
    dropped_unpaired: int = 0
    dropped_invalid: int = 0
    dropped_failed: int = 0
    homography_valid: int = 0
    homography_invalid: int = 0
    keyframe_changes: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_busy + self.dropped_unpaired + self.dropped_invalid + self.dropped_failed


@dataclass(frozen=True)
class Job:
    """Frames handed to the worker: one (sequential/keyframe) or two (stereo: image 0, image 1)."""

    frames: tuple[StampedFrame, ...]
    msgtype: str


@dataclass
class Reference:
    """The frame the next one is matched against, with its matcher cache key."""

    frame: StampedFrame
    image: np.ndarray
    key: int


@dataclass(frozen=True)
class Output:
    """What one processed job publishes."""

    matches: dict[str, Any]
    homography: dict[str, Any]
    pair: PairMatch
    estimate: HomographyEstimate
    images: tuple[np.ndarray, np.ndarray]


@dataclass
class MatcherCore:
    matcher: Matcher
    params: dict[str, Any]
    counters: Counters = field(default_factory=Counters)
    reference: Reference | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=100))
    last_problem: str = ""
    sync: ApproximateSync = field(default_factory=lambda: ApproximateSync(DEFAULTS["slop"],
                                                                          DEFAULTS["sync_queue_size"]))
    _next_key: int = 0
    _reported: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def create(matcher: Matcher, overrides: dict[str, Any]) -> "MatcherCore":
        """Core for a loaded matcher. The keypoint budget and detector settings always come from the
        parameters; SuperGlue settings left at the table's defaults (those of the official weights)
        keep the model's own values, so an open model keeps its trained threshold and iterations."""
        params = resolve(overrides)
        matcher.clear_cache()  # frame keys restart at 1: features cached under them are another core's
        core = MatcherCore(matcher, params, sync=ApproximateSync(params["slop"], params["sync_queue_size"]))
        for name in SUPERPOINT_PARAMETERS:
            if name in matcher.extractor.config:
                core._apply_model_parameter(name, core.params[name])
        for name in SUPERGLUE_PARAMETERS:
            if name in overrides and overrides[name] != DEFAULTS[name]:
                core._apply_model_parameter(name, core.params[name])
            else:
                core.params[name] = matcher.superglue.config[name]
        return core

    def accept(self, side: int, frame: StampedFrame, msgtype: str) -> Job | None:
        """A frame from subscription ``side`` (0, or 1 = second stereo camera) -> a job, if one is complete."""
        self.counters.received += 1
        if self.params["mode"] != "stereo":
            return Job((frame,), msgtype)
        pair, discarded = self.sync.add(side, frame)
        self.counters.dropped_unpaired += discarded
        return None if pair is None else Job(pair, msgtype)

    def run(self, job: Job) -> tuple[Output | None, str]:
        """Process a job, counting the outcome; returns (output or None, problem text or "")."""
        try:
            output = self.process(job)
        except FrameRejected as error:
            self.counters.dropped_invalid += 1
            self.last_problem = str(error)
            return None, self.last_problem
        except (RuntimeError, ValueError) as error:
            self.counters.dropped_failed += 1
            self.last_problem = f"matching failed: {error}"
            return None, self.last_problem
        if output is not None:
            valid = output.estimate.valid
            self.counters.homography_valid += int(valid)
            self.counters.homography_invalid += int(not valid)
        return output, ""

    def process(self, job: Job) -> Output | None:
        """Match a job; None when it only set the first reference. Raises FrameRejected for bad input."""
        images = [self._decode(frame, job.msgtype) for frame in job.frames]
        key = self._key()
        if len(images) == 2:
            if images[0].shape[:2] != images[1].shape[:2]:
                raise FrameRejected(f"stereo images differ in size: {images[0].shape[1]}x{images[0].shape[0]} "
                                    f"vs {images[1].shape[1]}x{images[1].shape[0]}")
            return self._match(Reference(job.frames[0], images[0], self._key()), job.frames[1], images[1], key)
        frame, image = job.frames[0], images[0]
        if self.reference is None:
            self.reference = Reference(frame, image, key)
            return None
        output = self._match(self.reference, frame, image, key)
        self._advance_reference(Reference(frame, image, key), output)
        return output

    def update(self, name: str, value: Any) -> None:
        """Apply a run-time parameter change; ValueError (old value kept) when it is not acceptable."""
        validate(name, value)
        if name == "sinkhorn_iterations" and self.matcher.backend == "onnxruntime":
            raise ValueError("sinkhorn_iterations is baked into the ONNX graph of backend 'onnxruntime'; "
                             "restart the node to change it")
        value = coerce(name, value)
        self._apply_model_parameter(name, value)
        if name == "slop":
            self.sync.set_slop(value)
        self.params[name] = value

    def diagnostics(self) -> tuple[int, str, dict[str, str]]:
        """(level, summary, key/values) for a DiagnosticStatus; drops since the last call raise the level."""
        totals = asdict(self.counters)
        delta = {name: value - self._reported.get(name, 0) for name, value in totals.items()}
        self._reported = totals
        level, summary = OK, "matching"
        if delta["dropped_invalid"] or delta["dropped_failed"]:
            level, summary = WARN, f"rejected input: {self.last_problem}"
        elif delta["received"] and delta["dropped_busy"] * 2 > delta["received"]:
            level, summary = WARN, "inference slower than the camera: most frames dropped"
        elif not self.counters.received:
            summary = "waiting for images"
        values = {name: str(value) for name, value in totals.items()}
        values["dropped_total"] = str(self.counters.dropped)
        if self.latencies:
            values["latency_median_s"] = f"{float(np.median(self.latencies)):.4f}"
            values["latency_max_s"] = f"{max(self.latencies):.4f}"
        values.update(mode=self.params["mode"], model=self.matcher.model_name, device=str(self.matcher.device))
        return level, summary, values

    def _decode(self, frame: StampedFrame, msgtype: str) -> np.ndarray:
        try:
            image = decode_image(frame.message, msgtype)
        except ImageDecodeError as error:
            raise FrameRejected(str(error)) from None
        if image.size == 0:
            raise FrameRejected("empty image")
        return image

    def _match(self, reference: Reference, frame: StampedFrame, image: np.ndarray, key: int) -> Output:
        pair = self.matcher.match(reference.image, image, reference.key, key)
        points0, points1, _ = pair.matched_points()
        estimate = estimate_homography(points0, points1, self.params["homography_method"],
                                       self.params["reprojection_threshold"], self.params["min_matches"])
        current = Stamp.from_nanoseconds(frame.stamp_ns, frame.frame_id)
        previous = Stamp.from_nanoseconds(reference.frame.stamp_ns, reference.frame.frame_id)
        latency = time.monotonic() - frame.received
        self.latencies.append(latency)
        matches = matches_fields(pair, current, previous, self.params["mode"], self.matcher.model_name,
                                 self.matcher.weights_id, latency)
        return Output(matches, homography_fields(estimate, current, previous), pair, estimate,
                      (reference.image, image))

    def _advance_reference(self, current: Reference, output: Output) -> None:
        """Sequential: the new frame is next reference. Keyframe: only when tracking has degraded."""
        replace = self.params["mode"] == "sequential"
        if self.params["mode"] == "keyframe":
            estimate = output.estimate
            replace = (not estimate.valid or estimate.inlier_ratio < self.params["keyframe_min_inlier_ratio"]
                       or estimate.num_matches < self.params["keyframe_min_matches"])
            self.counters.keyframe_changes += int(replace)
        if replace:
            self.reference = current

    def _key(self) -> int:
        self._next_key += 1
        return self._next_key

    def _apply_model_parameter(self, name: str, value: Any) -> None:
        if name in SUPERPOINT_PARAMETERS:
            self.matcher.extractor.config[name] = value
            self.matcher.clear_cache()
            if self.reference is not None:
                self.reference.key = self._key()
        elif name in SUPERGLUE_PARAMETERS:
            self.matcher.superglue.config[name] = value


def matcher_from_parameters(values: dict[str, Any]) -> Matcher:
    """The Matcher the node's (resolved) parameters describe; empty strings mean "not set"."""
    resize = None
    if values["resize_width"] > 0 and values["resize_height"] > 0:
        resize = (values["resize_width"], values["resize_height"])
    return Matcher(weights=values["weights"], weights_dir=values["weights_dir"] or None,
                   superpoint_weights=values["superpoint_weights"] or None,
                   superglue_weights=values["superglue_weights"] or None, device=values["device"],
                   resize=resize, precision=values["precision"], backend=values["backend"],
                   onnx_dir=values["onnx_dir"] or None)


def debug_image(output: Output) -> np.ndarray:
    """Both frames side by side with the matches drawn, for the optional debug topic."""
    points0, points1, confidences = output.pair.matched_points()
    estimate = output.estimate
    text = f"{len(confidences)} matches, {estimate.num_inliers} inliers" if estimate.valid else estimate.reason
    return draw_matches(output.images[0], output.images[1], points0, points1, confidences, text)
