"""Everything the matcher node does between receiving images and publishing, without ROS.

The rclpy node (``ros/node.py``) only converts messages and calls this:
image decoding, choosing each camera's reference frame (previous frame,
keyframe or the other camera), matching the pairs ready together as one
batch, the homography and relative pose, message contents, run-time
parameter updates and the counters behind /diagnostics. Nothing raises into
the caller: bad input is rejected with a reason and counted, and so is any
failure of matching.

Counters count frames (a stereo pair is two), and every received frame ends
in exactly one of them: ``received = published + dropped_* +
held_as_reference + in_flight`` per camera at any moment, where
``held_as_reference`` counts frames that became the reference without being
matched (a camera's first frame, the first after an expired reference) and
``in_flight`` those waiting for a stereo partner, in the hand-off to the
worker or being matched.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..geometry.homography import HomographyEstimate
from ..geometry.pose import NoPose, estimate_relative_pose
from ..inference.matcher import Matcher, PairMatch, PairRequest
from ..inference.pipeline import HomographySettings, match_pairs
from ..parameters import BY_NAME, MODEL_OWN, check_together, matcher_arguments, resolve, validate
from ..viz import draw_matches
from .image_codec import ImageDecodeError, decode_image
from .messages import Stamp, homography_fields, matches_fields, relative_pose_fields
from .pairing import ApproximateSync, StampedFrame

OK, WARN, ERROR = 0, 1, 2
SINGLE = ""  # the camera name of a node without `cameras`
UNPAIRED_WARN_SHARE = 0.1  # stereo: more unpaired frames than this share of those received raises the level
LATENCY_WINDOW = 100  # frames per camera behind the latency statistics


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
    dropped_error: int = 0
    dropped_deactivated: int = 0  # waiting for a partner, in the hand-off or being matched when deactivated
    held_as_reference: int = 0
    dropped_in_transport: int = 0  # reported lost by the middleware: never received, so not in `received`
    reference_expired: int = 0
    homography_valid: int = 0
    homography_invalid: int = 0
    keyframe_changes: int = 0

    @property
    def dropped(self) -> int:
        return (self.dropped_busy + self.dropped_unpaired + self.dropped_invalid + self.dropped_failed
                + self.dropped_error + self.dropped_deactivated)


@dataclass(frozen=True)
class Job:
    """Frames handed to the worker for one camera: one (sequential/keyframe) or two (stereo: image 0, 1)."""

    camera: str
    frames: tuple[StampedFrame, ...]
    msgtype: str


@dataclass
class Reference:
    """The frame the next one is matched against, with its matcher cache key."""

    frame: StampedFrame
    image: np.ndarray
    key: tuple[str, int]


@dataclass(frozen=True)
class Output:
    """What one processed job publishes."""

    camera: str
    frames: int
    matches: dict[str, Any]
    homography: dict[str, Any]
    relative_pose: dict[str, Any] | None  # None: the camera's intrinsics are not known
    pair: PairMatch
    estimate: HomographyEstimate
    images: tuple[np.ndarray, np.ndarray]


@dataclass
class CameraState:
    """One camera's pairing state and counters."""

    sync: ApproximateSync
    counters: Counters = field(default_factory=Counters)
    reference: Reference | None = None
    last_problem: str = ""
    reported: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    intrinsics: list[np.ndarray | None] = field(default_factory=lambda: [None, None])  # per subscription side


@dataclass
class Pending:
    """A job decoded and ready to match (or to become the first reference)."""

    job: Job
    reference: Reference
    frame: StampedFrame
    image: np.ndarray
    key: tuple[str, int]


@dataclass
class MatcherCore:
    matcher: Matcher
    params: dict[str, Any]
    cameras: dict[str, CameraState]
    homography: HomographySettings
    _next_key: int = 0

    @staticmethod
    def create(matcher: Matcher, given: dict[str, Any]) -> "MatcherCore":
        """Core for an already loaded matcher; ``given`` are the parameters the user set (others take the
        table's defaults, and unset model settings keep the model's own values), applied to its models."""
        params = resolve(given)
        model = {target: {p.name: params[p.name] for p in BY_NAME.values()
                          if p.target == target and params[p.name] is not None}
                 for target in ("extractor", "superglue")}
        matcher.configure(**model)
        matcher.clear_cache()  # frame keys restart: features cached under them are another core's
        return MatcherCore.assemble(matcher, params)

    @staticmethod
    def load(params: dict[str, Any]) -> "MatcherCore":
        """Core with a matcher built from resolved parameters: each setting is applied once, by the
        Matcher's constructor (what the node's configure does)."""
        return MatcherCore.assemble(Matcher(**matcher_arguments(params)), params)

    @staticmethod
    def assemble(matcher: Matcher, params: dict[str, Any]) -> "MatcherCore":
        names = params["cameras"] or [SINGLE]
        cameras = {name: CameraState(ApproximateSync(params["slop"], params["sync_queue_size"])) for name in names}
        homography = HomographySettings(params["homography_method"], params["reprojection_threshold"],
                                        params["min_matches"])
        return MatcherCore(matcher, params, cameras, homography)

    def effective(self, name: str) -> Any:
        """The value the node uses for a parameter: a model setting left unset reports the model's own,
        and one the model does not have reports None."""
        target = BY_NAME[name].target
        if target == "extractor":
            return self.matcher.extractor.config.get(name)
        if target == "superglue":
            return self.matcher.superglue.config.get(name)
        return self.params[name]

    @property
    def counters(self) -> Counters:
        """Totals over every camera."""
        total = Counters()
        for state in self.cameras.values():
            for key, value in asdict(state.counters).items():
                setattr(total, key, getattr(total, key) + value)
        return total

    def accept(self, camera: str, side: int, frame: StampedFrame, msgtype: str) -> Job | None:
        """A frame from ``camera``'s subscription ``side`` (1 = second stereo camera) -> a job, if complete."""
        state = self.cameras[camera]
        state.counters.received += 1
        state.in_flight += 1
        if self.params["mode"] != "stereo":
            return Job(camera, (frame,), msgtype)
        pair, discarded = state.sync.add(side, frame)
        self.discard(camera, discarded, "dropped_unpaired")
        return None if pair is None else Job(camera, pair, msgtype)

    def discard(self, camera: str, frames: int, counter: str, problem: str = "") -> None:
        """Count ``frames`` in-flight frames of ``camera`` as dropped for the reason ``counter``."""
        state = self.cameras[camera]
        setattr(state.counters, counter, getattr(state.counters, counter) + frames)
        state.in_flight -= frames
        if problem:
            state.last_problem = problem

    def published(self, output: Output) -> None:
        """The caller delivered ``output``: its frames are counted as published."""
        state = self.cameras[output.camera]
        state.counters.published += output.frames
        state.in_flight -= output.frames

    def deactivate(self) -> None:
        """Stop pairing: frames waiting for a stereo partner are counted as dropped on deactivation."""
        for camera, state in self.cameras.items():
            waiting = sum(len(queue) for queue in state.sync.queues)
            for queue in state.sync.queues:
                queue.clear()
            self.discard(camera, waiting, "dropped_deactivated")

    def set_intrinsics(self, camera: str, side: int, k: np.ndarray) -> None:
        """K of ``camera``'s subscription ``side`` (from its camera_info), for the relative pose."""
        self.cameras[camera].intrinsics[side] = np.asarray(k, dtype=np.float64).reshape(3, 3)

    def run(self, job: Job) -> tuple[Output | None, str]:
        return self.run_batch([job])[0]

    def run_batch(self, jobs: list[Job]) -> list[tuple[Output | None, str]]:
        """Process the jobs (at most one per camera) as one batch; per job (output or None, problem or "")."""
        results: list[tuple[Output | None, str]] = [(None, "")] * len(jobs)
        ready: list[tuple[int, Pending]] = []
        for index, job in enumerate(jobs):
            try:
                pending = self._prepare(job)
            except FrameRejected as error:
                results[index] = self._count(job, "dropped_invalid", str(error))
                continue
            except Exception as error:  # noqa: BLE001 - nothing may kill the worker; counted by type
                results[index] = self._count(job, "dropped_error", f"{type(error).__name__}: {error}")
                continue
            if pending is not None:
                ready.append((index, pending))
            else:
                self.discard(job.camera, 1, "held_as_reference")
        if ready:
            for index, result in zip([i for i, _ in ready], self._match([p for _, p in ready])):
                results[index] = result
        return results

    def update(self, name: str, value: Any) -> None:
        """Apply a run-time parameter change; ValueError (old value kept) when it is not acceptable."""
        parameter = BY_NAME.get(name)
        if parameter is None:
            raise ValueError(f"unknown parameter {name!r}")
        value = validate(name, value)
        if parameter.read_only and value != self.params[name]:
            raise ValueError(f"{name} applies at configure: deactivate and clean up the node, set it, then "
                             f"configure")
        check_together({**self.params, name: value})
        if value is None and parameter.target in ("extractor", "superglue"):
            if self.effective(name) is None:
                return  # a setting this model does not have stays unset
            raise ValueError(f"{name}: the model's own value ({MODEL_OWN}) is taken at configure; while "
                             f"configured give a value ({parameter.setting.range_text})")
        if parameter.target in ("extractor", "superglue"):
            self.matcher.configure(**{parameter.target: {name: value}})
            self._rekey_references()
        elif parameter.target == "homography":
            field_name = {"homography_method": "method", "reprojection_threshold": "threshold"}.get(name, name)
            self.homography = replace(self.homography, **{field_name: value})
        elif parameter.target == "pairing":
            for state in self.cameras.values():
                state.sync.set_slop(value)
        elif parameter.target == "matcher" and name == "max_image_pixels":
            self.matcher.max_image_pixels = value
        self.params[name] = value

    def diagnostics(self, camera: str) -> tuple[int, str, dict[str, str]]:
        """(level, summary, key/values) of one camera; problems since the last call raise the level."""
        state = self.cameras[camera]
        totals = asdict(state.counters)
        delta = {name: value - state.reported.get(name, 0) for name, value in totals.items()}
        state.reported = totals
        level, summary = OK, "matching"
        if delta["dropped_invalid"] or delta["dropped_failed"] or delta["dropped_error"]:
            level, summary = WARN, f"dropped frames: {state.last_problem}"
        elif delta["received"] and delta["dropped_busy"] * 2 > delta["received"]:
            level, summary = WARN, "inference slower than the camera: most frames dropped"
        elif delta["received"] and delta["dropped_unpaired"] > UNPAIRED_WARN_SHARE * delta["received"]:
            level, summary = WARN, (f"stereo frames without a partner: {delta['dropped_unpaired']} of "
                                    f"{delta['received']} (check the cameras' stamps and `slop`)")
        elif not state.counters.received:
            summary = "waiting for images"
        values = {name: str(value) for name, value in totals.items()}
        values["dropped_total"] = str(state.counters.dropped)
        values["in_flight"] = str(state.in_flight)
        if state.latencies:
            values["latency_median_s"] = f"{float(np.median(state.latencies)):.4f}"
            values["latency_max_s"] = f"{max(state.latencies):.4f}"
        values.update(mode=self.params["mode"], model=self.matcher.model_name, device=str(self.matcher.device))
        return level, summary, values

    def _count(self, job: Job, counter: str, problem: str) -> tuple[None, str]:
        self.discard(job.camera, len(job.frames), counter, problem)
        return None, problem

    def _prepare(self, job: Job) -> Pending | None:
        """Decode a job and pick its reference; None when the frame only became the reference."""
        images = [self._decode(frame, job.msgtype) for frame in job.frames]
        state = self.cameras[job.camera]
        if len(images) == 2:
            if images[0].shape[:2] != images[1].shape[:2]:
                raise FrameRejected(f"stereo images differ in size: {images[0].shape[1]}x{images[0].shape[0]} "
                                    f"vs {images[1].shape[1]}x{images[1].shape[0]}")
            return Pending(job, Reference(job.frames[0], images[0], self._key(job.camera)), job.frames[1], images[1],
                           self._key(job.camera))
        frame, image, key = job.frames[0], images[0], self._key(job.camera)
        if state.reference is not None and self._expired(state.reference.frame, frame):
            state.counters.reference_expired += 1
            state.reference = None
        if state.reference is None:
            state.reference = Reference(frame, image, key)
            return None
        return Pending(job, state.reference, frame, image, key)

    def _expired(self, reference: StampedFrame, frame: StampedFrame) -> bool:
        """Sequential and keyframe modes: a reference older than ``max_reference_age`` starts over."""
        age = self.params["max_reference_age"]
        return age > 0 and abs(frame.stamp_ns - reference.stamp_ns) > age * 1e9

    def _match(self, batch: list[Pending]) -> list[tuple[Output | None, str]]:
        requests = [PairRequest(p.reference.image, p.image, p.reference.key, p.key) for p in batch]
        try:
            outcomes = match_pairs(self.matcher, requests, self.homography)
        except (RuntimeError, ValueError) as error:
            return [self._count(p.job, "dropped_failed", f"matching failed: {error}") for p in batch]
        except Exception as error:  # noqa: BLE001 - nothing may kill the worker; counted by type
            return [self._count(p.job, "dropped_error", f"{type(error).__name__}: {error}") for p in batch]
        results = []
        for pending, outcome in zip(batch, outcomes):
            output = self._output(pending, outcome.pair, outcome.homography)
            counters = self.cameras[pending.job.camera].counters
            counters.homography_valid += int(output.estimate.valid)
            counters.homography_invalid += int(not output.estimate.valid)
            if len(pending.job.frames) == 1:
                self._advance_reference(pending, output)
            results.append((output, ""))
        return results

    def _output(self, pending: Pending, pair: PairMatch, estimate: HomographyEstimate) -> Output:
        current = Stamp.from_nanoseconds(pending.frame.stamp_ns, pending.frame.frame_id)
        previous = Stamp.from_nanoseconds(pending.reference.frame.stamp_ns, pending.reference.frame.frame_id)
        state = self.cameras[pending.job.camera]
        latency = time.monotonic() - pending.frame.received
        state.latencies.append(latency)
        matches = matches_fields(pair, current, previous, self.params["mode"], self.matcher.model_name,
                                 self.matcher.weights_id, latency)
        return Output(pending.job.camera, len(pending.job.frames), matches,
                      homography_fields(estimate, current, previous),
                      self._relative_pose(pending, pair, current, previous), pair, estimate,
                      (pending.reference.image, pending.image))

    def intrinsics(self, camera: str, side: int) -> np.ndarray | None:
        """K of a camera's side: its camera_info's, else the ``camera_matrix`` parameter's, else None."""
        k = self.cameras[camera].intrinsics[side]
        if k is None and self.params.get("camera_matrix"):
            k = np.asarray(self.params["camera_matrix"], dtype=np.float64).reshape(3, 3)
        return k

    def _relative_pose(self, pending: Pending, pair: PairMatch, current: Stamp,
                       reference: Stamp) -> dict[str, Any] | None:
        """RelativePose contents, or None without intrinsics; an estimator failure is an invalid pose."""
        sides = (0, 1) if len(pending.job.frames) == 2 else (0, 0)
        k0, k1 = (self.intrinsics(pending.job.camera, side) for side in sides)
        if k0 is None or k1 is None:
            return None
        points0, points1, _ = pair.matched_points()
        estimate = estimate_relative_pose(points0, points1, k0, k1)  # degenerate input: NoPose, never raises
        if isinstance(estimate, NoPose):
            return relative_pose_fields(current, reference, None, len(points0), estimate.reason)
        return relative_pose_fields(current, reference, estimate, len(points0), "")

    def _decode(self, frame: StampedFrame, msgtype: str) -> np.ndarray:
        try:
            return decode_image(frame.message, msgtype, frame.topic, self.matcher.max_image_pixels)
        except ImageDecodeError as error:
            raise FrameRejected(str(error)) from None

    def _advance_reference(self, pending: Pending, output: Output) -> None:
        """Sequential: the new frame is next reference. Keyframe: only when tracking has degraded."""
        state = self.cameras[pending.job.camera]
        replace_reference = self.params["mode"] == "sequential"
        if self.params["mode"] == "keyframe":
            estimate = output.estimate
            replace_reference = (not estimate.valid or estimate.inlier_ratio < self.params["keyframe_min_inlier_ratio"]
                                 or estimate.num_matches < self.params["keyframe_min_matches"])
            state.counters.keyframe_changes += int(replace_reference)
        if replace_reference:
            state.reference = Reference(pending.frame, pending.image, pending.key)

    def _key(self, camera: str) -> tuple[str, int]:
        self._next_key += 1
        return camera, self._next_key

    def _rekey_references(self) -> None:
        """After an extractor change the cache is empty: references get new keys so they are extracted again."""
        for camera, state in self.cameras.items():
            if state.reference is not None:
                state.reference.key = self._key(camera)


def debug_image(output: Output) -> np.ndarray:
    """Both frames side by side with the matches drawn, for the optional debug topic."""
    points0, points1, confidences = output.pair.matched_points()
    estimate = output.estimate
    text = f"{len(confidences)} matches, {estimate.num_inliers} inliers" if estimate.valid else estimate.reason
    return draw_matches(output.images[0], output.images[1], points0, points1, confidences, text)
