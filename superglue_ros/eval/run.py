"""Replay a bag through the matcher and measure it: the engine behind `superglue-ros eval`.

Frames are streamed from the bag and decoded only when a pair needs them,
so an hour-long recording evaluated with ``--stride``/``--max-pairs`` costs
what the selected pairs cost. Each pair yields one JSON-ready record; the
summary, plots and the output bag are all derived from those records.
Outputs are staged in a hidden folder and renamed into place at the end, so
a crash never leaves files that look like a finished run, while Ctrl-C
still produces a (clearly marked) partial report of the pairs done.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import metrics
from .bagio import Bag, ImageFrame, OutputBag, RawFrame
from ..geometry.homography import HomographyEstimate, estimate_homography
from ..inference.matcher import Matcher, PairMatch
from ..ros.messages import Stamp, homography_fields, matches_fields
from ..models.optimal_transport import extract_matches
from ..ros.pairing import ApproximateSync, StampedFrame
from ..inference.preprocess import resize_gray, resized_shape, to_gray_float
from ..data.homographies import ground_truth_matches, sample_homography, warp_image

SCHEMA_VERSION = 2  # 2: the front end's stage and configuration are named "features" (1: "superpoint")
MODES = ("sequential", "stereo")
STAGES = ("decode", "preprocess", "features", "superglue", "geometry")
OUTPUT_BAG = "matches_bag"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
SCORE_BINS = 20
STEREO_QUEUE_SIZE = 64  # frames per camera awaiting a partner: bags may record one camera in bursts
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry", "geometry_msgs/msg/TransformStamped", "tf2_msgs/msg/TFMessage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
# Descriptor-matching baselines of the synthetic benchmark: name -> Lowe ratio (None: plain mutual NN).
BASELINES: dict[str, float | None] = {"mnn": None, "mnn_ratio": 0.8}


class EvalError(Exception):
    """The evaluation cannot run as configured; one line for the user."""


@dataclass(frozen=True)
class EvalConfig:
    """What to replay and how to pair and score it (command-line options, validated)."""

    bag: str
    topic: str
    topic1: str | None = None
    mode: str = "sequential"
    stride: int = 1
    max_pairs: int | None = None
    synthetic: bool = False
    strength: float = 1.0
    warps: int = 1
    seed: int = 0
    photometric: bool = True
    ransac_threshold: float = 3.0
    sync_tolerance: float = 0.02
    gt_topic: str | None = None
    camera_info_topic: str | None = None
    gt_tolerance: float = 0.05
    storage: str = "sqlite3"
    matches_topic: str = "/superglue/matches"
    homography_topic: str = "/superglue/homography"
    visualisations: int = 3

    def check(self) -> None:
        if self.mode not in MODES:
            raise EvalError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.stride < 1:
            raise EvalError(f"--stride must be >= 1, got {self.stride}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise EvalError(f"--max-pairs must be >= 1, got {self.max_pairs}")
        if self.mode == "stereo" and not self.topic1:
            raise EvalError("--mode stereo needs --topic1 (the second camera)")
        if self.mode == "sequential" and self.topic1:
            raise EvalError("--topic1 is only used with --mode stereo")
        if self.synthetic and self.mode == "stereo":
            raise EvalError("--synthetic-homography warps single frames; use it with --mode sequential")
        if self.gt_topic and (self.mode != "sequential" or self.synthetic):
            raise EvalError("--gt-topic scores sequential pairs of one camera; not with stereo or synthetic mode")
        if self.warps < 1:
            raise EvalError(f"--warps must be >= 1, got {self.warps}")
        if self.warps > 1 and not self.synthetic:
            raise EvalError("--warps is the number of random warps per frame in --synthetic-homography mode")
        if self.strength < 0:
            raise EvalError(f"--strength must be >= 0, got {self.strength}")


@dataclass
class Pair:
    """Two decoded frames to match; ``h_true`` is set for synthetic pairs."""

    frame0: ImageFrame
    frame1: ImageFrame
    decode_s: float
    h_true: np.ndarray | None = None


@dataclass
class Sample:
    """A pair kept for the report's match pictures."""

    image0: np.ndarray
    image1: np.ndarray
    points0: np.ndarray
    points1: np.ndarray
    confidences: np.ndarray
    label: str


@dataclass
class Outcome:
    """What one run produced: the metrics dict, the visualisation samples and the score histogram.

    Matching scores are binned as pairs go by rather than kept, so memory
    stays flat on long recordings.
    """

    metrics: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)
    score_counts: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, dtype=np.int64))


def expected_pairs(frame_count: int, config: EvalConfig) -> int:
    """How many pairs the configuration yields from ``frame_count`` frames of the first topic."""
    used = math.ceil(frame_count / config.stride)
    count = used * config.warps if config.synthetic or config.mode == "stereo" else max(used - 1, 0)
    return count if config.max_pairs is None else min(count, config.max_pairs)


class _Decoder:
    """Decodes raw frames, accumulating the time spent so it can be charged to the pair that needed it."""

    def __init__(self, bag: Bag) -> None:
        self.bag = bag
        self.seconds = 0.0

    def __call__(self, raw: RawFrame) -> ImageFrame:
        start = time.perf_counter()
        frame = self.bag.decode(raw)
        self.seconds += time.perf_counter() - start
        return frame

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def sequential_pairs(bag: Bag, config: EvalConfig) -> Iterator[Pair]:
    """Every ``stride``-th frame matched against the previous selected one (reference = older)."""
    decode = _Decoder(bag)
    previous: ImageFrame | None = None
    for raw in bag.raw_frames([config.topic]):
        if raw.index % config.stride:
            continue
        frame = decode(raw)
        if previous is not None:
            yield Pair(previous, frame, decode.take())
        previous = frame


def synthetic_pairs(bag: Bag, config: EvalConfig, resize: int | tuple[int, int] | None = None) -> Iterator[Pair]:
    """Every ``stride``-th frame (as 8-bit gray) against ``warps`` random warps of itself.

    Frames are first scaled as the matcher's ``resize`` would scale them, so
    the benchmark's pixel thresholds (3 px correct, 5 px wrong, AUC) are
    pixels the network sees, whatever the size of the source images. Warp k
    of frame i is seeded by (seed, i, k), with k left out for the first warp
    so that one-warp runs keep their pairs.
    """
    decode = _Decoder(bag)
    for raw in bag.raw_frames([config.topic]):
        if raw.index % config.stride:
            continue
        frame = decode(raw)
        gray = np.rint(to_gray_float(frame.image) * 255.0).astype(np.uint8)
        gray = resize_gray(gray, resized_shape(gray.shape[0], gray.shape[1], resize))
        reference = ImageFrame(frame.index, frame.topic, frame.log_time, frame.stamp, gray)
        for k in range(config.warps):
            rng = np.random.default_rng([config.seed, raw.index, *([k] if k else [])])
            h = sample_homography(rng, gray.shape[0], gray.shape[1], config.strength)
            warped = warp_image(gray, h, rng, photometric=config.photometric)
            current = ImageFrame(frame.index, f"{frame.topic} (warped)", frame.log_time, frame.stamp, warped)
            yield Pair(reference, current, decode.take(), h)


@dataclass
class FrameTally:
    """Stereo frames read per camera and pairs formed, so frames left without a partner are counted.

    Frames a ``stride`` skips on the first camera are never read; the second
    camera's frames that would have paired with them count as unpaired.
    """

    read: list[int] = field(default_factory=lambda: [0, 0])
    paired: int = 0

    def unpaired(self, topics: tuple[str, str]) -> dict[str, int]:
        return {topic: read - self.paired for topic, read in zip(topics, self.read)}


def stereo_pairs(bag: Bag, config: EvalConfig, tally: FrameTally) -> Iterator[Pair]:
    """Left frames (every ``stride``-th) paired with right frames by header stamp, the way the node pairs them.

    Using the node's own ``ApproximateSync`` (slop = ``sync_tolerance``)
    means an evaluation over a recorded bag scores the pairs a running node
    would have matched. Frames are only decoded once paired.
    """
    decode = _Decoder(bag)
    sync = ApproximateSync(config.sync_tolerance, STEREO_QUEUE_SIZE)
    for raw in bag.raw_frames([config.topic, config.topic1]):
        side = 0 if raw.topic == config.topic else 1
        if side == 0 and raw.index % config.stride:
            continue
        tally.read[side] += 1
        pair, _ = sync.add(side, StampedFrame(header_stamp(bag, raw), raw, 0.0))
        if pair is not None:
            tally.paired += 1
            yield Pair(decode(pair[0].message), decode(pair[1].message), decode.take())


def header_stamp(bag: Bag, raw: RawFrame) -> int:
    """Header stamp [ns] of a serialised image (deserialising is cheap next to decoding pixels)."""
    return Stamp.from_header(bag.deserialize(raw.data, raw.msgtype).header).nanoseconds


def frame_pairs(bag: Bag, config: EvalConfig, resize: int | tuple[int, int] | None = None,
                tally: FrameTally | None = None) -> Iterator[Pair]:
    """The pairs the configuration asks for, stopping at ``max_pairs``; ``resize`` is the matcher's,
    ``tally`` receives the stereo frame counts."""
    if config.synthetic:
        source = synthetic_pairs(bag, config, resize)
    elif config.mode == "stereo":
        source = stereo_pairs(bag, config, tally if tally is not None else FrameTally())
    else:
        source = sequential_pairs(bag, config)
    return islice(source, config.max_pairs)


def match_frames(matcher: Matcher, pair: Pair, synthetic: bool) -> PairMatch:
    """Match a pair; real frames are cached by (topic, index), so each runs SuperPoint once."""
    if synthetic:
        return matcher.match(pair.frame0.image, pair.frame1.image)
    return matcher.match(pair.frame0.image, pair.frame1.image,
                         (pair.frame0.topic, pair.frame0.index), (pair.frame1.topic, pair.frame1.index))


def score_synthetic(pair_match: PairMatch, h_true: np.ndarray,
                    estimate: HomographyEstimate) -> dict[str, dict[str, float]]:
    """SuperGlue and the descriptor baselines (mutual nearest neighbours, alone and with Lowe's
    ratio test) scored on the same keypoints and truth.

    ``estimate`` is the homography already fitted to SuperGlue's matches; the
    baselines' are fitted with its RANSAC threshold.
    """
    kpts0 = pair_match.features0.keypoints.cpu().numpy()
    kpts1 = pair_match.features1.keypoints.cpu().numpy()
    gt0, _ = ground_truth_matches(kpts0, kpts1, h_true)
    height, width = pair_match.features0.image_size
    candidates = {
        "superglue": pair_match.result.matches0.reshape(-1).cpu().numpy().astype(np.int64),
    }
    descriptors = (pair_match.features0.descriptors.float().cpu().numpy(),
                   pair_match.features1.descriptors.float().cpu().numpy())
    for name, ratio in BASELINES.items():
        candidates[name] = metrics.mutual_nearest_neighbours(*descriptors, ratio=ratio)
    scores = {}
    for name, matches0 in candidates.items():
        correct, scored, positives = metrics.match_counts(matches0, gt0)
        matched = np.flatnonzero(matches0 >= 0)
        fitted = estimate if name == "superglue" else estimate_homography(
            kpts0[matched], kpts1[matches0[matched]], threshold=estimate.threshold)
        error = metrics.mean_corner_error(fitted.h if fitted.valid else None, h_true, height, width)
        scores[name] = {"matches": int(matched.size), "precision": metrics.ratio_or_nan(correct, scored),
                        "recall": metrics.ratio_or_nan(correct, positives), "correct": correct, "scored": scored,
                        "corner_error": error, "inliers": fitted.num_inliers}
    scores["superglue"]["by_confidence"] = metrics.counts_by_confidence(*candidate_matches(pair_match), gt0)
    scores["keypoints"] = {"keypoints0": int(len(kpts0)), "keypoints1": int(len(kpts1)),
                           "ground_truth_matches": int((gt0 >= 0).sum())}
    return scores


def candidate_matches(pair_match: PairMatch) -> tuple[np.ndarray, np.ndarray]:
    """Every mutual best assignment of image 0 with its confidence, below the match threshold too."""
    log_assignment = pair_match.result.log_assignment.float().cpu()
    matches0, _, scores0, _ = extract_matches(log_assignment[None], 0.0)
    return matches0[0].numpy().astype(np.int64), scores0[0].numpy()


@dataclass(frozen=True)
class PoseTrack:
    """Camera-to-world poses over time, from a pose, odometry or tf topic."""

    times: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray

    def at(self, stamp_ns: int, tolerance_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The pose nearest to ``stamp_ns`` if within tolerance."""
        if self.times.size == 0:
            return None
        index = int(np.argmin(np.abs(self.times - stamp_ns)))
        if abs(int(self.times[index]) - stamp_ns) > tolerance_ns:
            return None
        return self.rotations[index], self.translations[index]


def _pose_from_message(message: Any, msgtype: str, frame_id: str) -> list[tuple[int, Any, Any]]:
    """(stamp, orientation, position) entries of one pose-carrying message."""
    if msgtype == "tf2_msgs/msg/TFMessage":
        return [entry for transform in message.transforms
                for entry in _pose_from_message(transform, "geometry_msgs/msg/TransformStamped", frame_id)]
    if msgtype == "geometry_msgs/msg/TransformStamped":
        if frame_id and message.child_frame_id != frame_id:
            return []
        pose = (message.transform.rotation, message.transform.translation)
    elif msgtype == "geometry_msgs/msg/PoseStamped":
        pose = (message.pose.orientation, message.pose.position)
    else:
        pose = (message.pose.pose.orientation, message.pose.pose.position)
    return [(Stamp.from_header(message.header).nanoseconds, pose[0], pose[1])]


def load_pose_track(bag: Bag, topic: str, frame_id: str) -> PoseTrack:
    """Read the ground-truth poses; for tf, the transforms whose child frame is the camera's frame."""
    msgtype = bag.topics().get(topic)
    if msgtype is None or msgtype not in POSE_TYPES:
        kinds = ", ".join(t.rsplit("/", 1)[-1] for t in POSE_TYPES)
        found = "is not in the bag" if msgtype is None else f"is {msgtype}"
        raise EvalError(f"--gt-topic {topic} {found}; expected one of {kinds}")
    entries = [entry for _, message in bag.messages(topic) for entry in _pose_from_message(message, msgtype, frame_id)]
    if not entries:
        raise EvalError(f"--gt-topic {topic} has no poses for camera frame {frame_id!r}")
    entries.sort(key=lambda entry: entry[0])
    try:
        rotations = np.stack([metrics.quaternion_to_rotation(q.x, q.y, q.z, q.w) for _, q, _ in entries])
    except ValueError as error:
        raise EvalError(f"--gt-topic {topic}: {error}") from None
    translations = np.array([[p.x, p.y, p.z] for _, _, p in entries], dtype=np.float64)
    return PoseTrack(np.array([e[0] for e in entries], dtype=np.int64), rotations, translations)


def load_intrinsics(bag: Bag, config: EvalConfig) -> np.ndarray:
    """3x3 K from the first CameraInfo: the given topic, the camera's sibling camera_info, or the only one."""
    infos = sorted(name for name, kind in bag.topics().items() if kind == CAMERA_INFO)
    sibling = config.topic.rsplit("/", 1)[0] + "/camera_info"
    topic = config.camera_info_topic or (sibling if sibling in infos else infos[0] if len(infos) == 1 else None)
    if topic is None or topic not in infos:
        raise EvalError(f"pose evaluation needs sensor_msgs/CameraInfo (--camera-info-topic); "
                        f"CameraInfo topics in the bag: {', '.join(infos) or 'none'}")
    for _, message in bag.messages(topic):
        k = np.asarray(message.k if hasattr(message, "k") else message.K, dtype=np.float64)
        return k.reshape(3, 3)
    raise EvalError(f"camera info topic {topic} has no messages")


def estimate_relative_pose(points0: np.ndarray, points1: np.ndarray, k0: np.ndarray, k1: np.ndarray,
                           threshold_px: float = 1.0,
                           confidence: float = 0.99999) -> tuple[np.ndarray, np.ndarray] | None:
    """(R, t) from image-0 to image-1 camera via RANSAC on the essential matrix, as the paper does.

    Points are normalised by the intrinsics, so the pixel threshold is
    divided by the mean focal length; of several essential-matrix solutions
    the one with most points in front of both cameras wins.
    """
    if len(points0) < 5:
        return None
    normalised0 = (points0 - k0[[0, 1], [2, 2]]) / k0[[0, 1], [0, 1]]
    normalised1 = (points1 - k1[[0, 1], [2, 2]]) / k1[[0, 1], [0, 1]]
    focal = np.mean([k0[0, 0], k0[1, 1], k1[0, 0], k1[1, 1]])
    essential, mask = cv2.findEssentialMat(normalised0, normalised1, np.eye(3), threshold=threshold_px / focal,
                                           prob=confidence, method=cv2.RANSAC)
    if essential is None:
        return None
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for candidate in np.split(essential, len(essential) // 3):
        count, rotation, translation, _ = cv2.recoverPose(candidate, normalised0, normalised1, np.eye(3),
                                                          1e9, mask=mask.copy())
        if best is None or count > best[0]:
            best = (count, rotation, translation[:, 0])
    return (best[1], best[2]) if best is not None else None


def score_pose(points0: np.ndarray, points1: np.ndarray, pair: Pair, k: np.ndarray, track: PoseTrack,
               tolerance_ns: int) -> dict[str, float] | None:
    """Pose error of one pair against the ground truth, or None when a ground-truth pose is missing."""
    pose0 = track.at(pair.frame0.stamp.nanoseconds, tolerance_ns)
    pose1 = track.at(pair.frame1.stamp.nanoseconds, tolerance_ns)
    if pose0 is None or pose1 is None:
        return None
    r_true, t_true = metrics.relative_pose(pose0[0], pose0[1], pose1[0], pose1[1])
    estimate = estimate_relative_pose(points0, points1, k, k)
    r_est, t_est = estimate if estimate is not None else (None, None)
    rotation = metrics.rotation_error_deg(r_est, r_true) if r_est is not None else math.inf
    translation = metrics.translation_error_deg(t_est, t_true) if t_est is not None else math.inf
    return {"rotation_error": rotation, "translation_error": translation,
            "error": metrics.pose_error_deg(r_est, t_est, r_true, t_true)}


class Run:
    """Accumulates per-pair records, the output bag and report samples while pairs stream by."""

    def __init__(self, config: EvalConfig, matcher: Matcher, staging: Path, expected: int) -> None:
        self.config = config
        self.matcher = matcher
        self.records: list[dict[str, Any]] = []
        self.outcome = Outcome({})
        self.sample_at = sorted({0, expected // 2, max(expected - 1, 0)})[:config.visualisations]
        self.bag = None if config.synthetic else OutputBag(staging / OUTPUT_BAG, config.storage)
        self.pose: tuple[np.ndarray, PoseTrack] | None = None
        self.first_time: int | None = None
        self.tally = FrameTally()

    def add(self, pair: Pair) -> dict[str, Any]:
        """Match, estimate and score one pair; returns its record."""
        pair_match = match_frames(self.matcher, pair, self.config.synthetic)
        points0, points1, confidences = pair_match.matched_points()
        start = time.perf_counter()
        estimate = estimate_homography(points0, points1, threshold=self.config.ransac_threshold)
        timings = {"decode": pair.decode_s, "preprocess": pair_match.timings.get("preprocess", 0.0),
                   "features": pair_match.timings.get("features", 0.0),
                   "superglue": pair_match.timings.get("superglue", 0.0),
                   "geometry": time.perf_counter() - start}
        if self.first_time is None:
            self.first_time = pair.frame1.stamp.nanoseconds
        record: dict[str, Any] = {
            "index": len(self.records),
            "frame0": pair.frame0.index, "frame1": pair.frame1.index,
            "stamp0_ns": pair.frame0.stamp.nanoseconds, "stamp1_ns": pair.frame1.stamp.nanoseconds,
            "time_s": (pair.frame1.stamp.nanoseconds - self.first_time) / 1e9,
            "keypoints0": len(pair_match.features0), "keypoints1": len(pair_match.features1),
            "matches": int(len(confidences)), "inliers": estimate.num_inliers,
            "inlier_ratio": estimate.inlier_ratio, "homography_valid": estimate.valid,
            "homography_reason": estimate.reason, "timings_s": timings,
        }
        if pair.h_true is not None:
            record["synthetic"] = score_synthetic(pair_match, pair.h_true, estimate)
        if self.pose is not None:
            record["pose"] = score_pose(points0, points1, pair, self.pose[0], self.pose[1],
                                        int(self.config.gt_tolerance * 1e9))
        if self.bag is not None:
            self._write_messages(pair, pair_match, estimate, sum(timings.values()))
        if record["index"] in self.sample_at:
            self.outcome.samples.append(Sample(pair.frame0.image, pair.frame1.image, points0, points1, confidences,
                                               f"pair {record['index']}: {len(confidences)} matches, "
                                               f"{estimate.num_inliers} inliers"))
        self.outcome.score_counts += metrics.histogram(confidences, SCORE_BINS)["counts"]
        self.records.append(record)
        return record

    def _write_messages(self, pair: Pair, pair_match: PairMatch, estimate: HomographyEstimate,
                        processing_time: float) -> None:
        """The messages the live node would publish for this pair, stamped at the current frame's receipt."""
        current, reference = pair.frame1.stamp, pair.frame0.stamp
        fields = matches_fields(pair_match, current, reference, self.config.mode, self.matcher.model_name,
                                self.matcher.weights_id, processing_time)
        self.bag.write(self.config.matches_topic, "superglue_ros/msg/Matches", fields, pair.frame1.log_time)
        self.bag.write(self.config.homography_topic, "superglue_ros/msg/Homography",
                       homography_fields(estimate, current, reference), pair.frame1.log_time)

    def close_bag(self) -> None:
        if self.bag is not None:
            self.bag.close()


def summarise(records: list[dict[str, Any]], score_counts: np.ndarray) -> dict[str, Any]:
    """Aggregate statistics of the per-pair records (see the README's metric definitions)."""
    def column(key: str) -> list[float]:
        return [float(r[key]) for r in records]

    out: dict[str, Any] = {
        "pairs": len(records),
        "keypoints": metrics.summary(column("keypoints0") + column("keypoints1")),
        "matches": metrics.summary(column("matches")),
        "inliers": metrics.summary(column("inliers")),
        "inlier_ratio": metrics.summary(column("inlier_ratio")),
        "homography_valid_rate": float(np.mean(column("homography_valid"))) if records else math.nan,
        "matching_score_histogram": {"edges": metrics.histogram([], SCORE_BINS)["edges"],
                                     "counts": [int(c) for c in score_counts]},
        "timing_ms": {stage: metrics.summary([1e3 * r["timings_s"][stage] for r in records]) for stage in STAGES},
    }
    out["timing_ms"]["total"] = metrics.summary([1e3 * sum(r["timings_s"].values()) for r in records])
    synthetic = [r["synthetic"] for r in records if "synthetic" in r]
    if synthetic:
        positives = [s["keypoints"]["ground_truth_matches"] for s in synthetic]
        methods = {name: _summarise_method([s[name] for s in synthetic], positives)
                   for name in ("superglue", *BASELINES)}
        images = [r["frame0"] for r in records if "synthetic" in r]
        out["synthetic_homography"] = methods | {
            "gain": _gain(methods["superglue"], methods["mnn"]) | _auc_interval(synthetic, "mnn", images),
            "gain_vs_ratio_test": _gain(methods["superglue"], methods["mnn_ratio"])
            | _auc_interval(synthetic, "mnn_ratio", images),
            "precision_at_equal_recall": _precision_at_equal_recall(synthetic, positives, methods)}
    poses = [r["pose"] for r in records if r.get("pose") is not None]
    if any("pose" in r for r in records):
        errors = [p["error"] for p in poses]
        out["pose"] = {
            "scored_pairs": len(poses),
            "auc": {f"{t:g}deg": v for t, v in metrics.error_auc(errors, metrics.POSE_AUC_THRESHOLDS).items()},
            "rotation_error_deg": metrics.summary([p["rotation_error"] for p in poses]),
            "translation_error_deg": metrics.summary([p["translation_error"] for p in poses]),
        }
    return out


def _summarise_method(scores: list[dict[str, float]], positives: list[int]) -> dict[str, Any]:
    errors = [s["corner_error"] for s in scores]
    correct = sum(s["correct"] for s in scores)
    return {
        "precision": _nanmean([s["precision"] for s in scores]),
        "recall": _nanmean([s["recall"] for s in scores]),
        # Pooled over pairs: a pair with few keypoints weighs by its matches, and a pair
        # without true matches counts for whoever predicts there (its ratio is NaN and
        # drops out of the per-pair means above only for the methods that abstain).
        "precision_pooled": metrics.ratio_or_nan(correct, sum(s["scored"] for s in scores)),
        "recall_pooled": metrics.ratio_or_nan(correct, sum(positives)),
        "matches": metrics.summary([s["matches"] for s in scores]),
        "corner_error_px": metrics.summary(errors),
        "auc": {f"{t:g}px": v for t, v in metrics.error_auc(errors, metrics.HOMOGRAPHY_AUC_THRESHOLDS).items()},
    }


def _precision_at_equal_recall(scores: list[dict[str, Any]], positives: list[int],
                               methods: dict[str, Any]) -> dict[str, dict[str, float]]:
    """SuperGlue at the threshold most precise while recalling at least as much as each baseline.

    The model's own threshold serves its other uses (the homography above
    all); this is the point of its precision-recall curve that answers "more
    precise at equal or higher recall?".
    """
    curves = [s["superglue"]["by_confidence"] for s in scores]
    correct = np.sum([c["correct"] for c in curves], axis=0)
    scored = np.sum([c["scored"] for c in curves], axis=0)
    out = {}
    for name in BASELINES:
        point = metrics.precision_at_recall(correct, scored, sum(positives), methods[name]["recall_pooled"])
        out[name] = point | {"gain": _difference(point["precision_pooled"], methods[name]["precision_pooled"])}
    return out


def _gain(method: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """Method minus baseline in precision, recall and each homography AUC."""
    return {key: _difference(method[key], baseline[key])
            for key in ("precision", "recall", "precision_pooled", "recall_pooled")} | {
        f"auc@{t:g}px": _difference(method["auc"][f"{t:g}px"], baseline["auc"][f"{t:g}px"])
        for t in metrics.HOMOGRAPHY_AUC_THRESHOLDS}


def _auc_interval(scores: list[dict[str, Any]], baseline: str, images: list[int]) -> dict[str, list[float]]:
    """95% interval of SuperGlue's AUC gain over ``baseline``, resampling source images."""
    intervals = metrics.auc_difference_interval([s["superglue"]["corner_error"] for s in scores],
                                                [s[baseline]["corner_error"] for s in scores], images,
                                                metrics.HOMOGRAPHY_AUC_THRESHOLDS)
    return {f"auc@{t:g}px_ci95": list(bounds) for t, bounds in intervals.items()}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _difference(a: float, b: float) -> float:
    return a - b if not (math.isnan(a) or math.isnan(b)) else math.nan


def evaluate(bag: Bag, config: EvalConfig, matcher: Matcher, out_dir: Path,
             on_pair: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> Outcome:
    """Run the evaluation and move metrics.json, report.html and the output bag into ``out_dir``.

    ``on_pair`` is called with each record (the progress bar, tests). A
    KeyboardInterrupt finishes the outputs from the pairs done, marked
    ``"partial": true``, and is then re-raised.
    """
    from tqdm import tqdm

    from .report import write_report

    config.check()
    bag.check_image_topic(config.topic)
    if config.topic1:
        bag.check_image_topic(config.topic1)
    expected = expected_pairs(bag.count(config.topic), config)
    if expected == 0:
        raise EvalError(f"no pairs to evaluate: {config.topic} has {bag.count(config.topic)} frame(s); "
                        f"sequential mode needs at least two selected frames (--stride {config.stride})")
    staging = out_dir / f".eval-staging-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as error:
        raise EvalError(f"cannot create output folder {out_dir}: {error.strerror or error}") from None
    matcher.clear_cache()  # keys are (topic, frame index): frames of another bag must not be reused
    interrupted = False
    try:
        run = Run(config, matcher, staging, expected)
        started = time.perf_counter()
        try:
            if config.gt_topic:
                frame_id = first_frame_id(bag, config.topic)
                run.pose = (load_intrinsics(bag, config), load_pose_track(bag, config.gt_topic, frame_id))
            with tqdm(total=expected, unit="pair", desc="eval", disable=not progress, dynamic_ncols=True) as bar:
                for pair in frame_pairs(bag, config, matcher.resize, run.tally):
                    record = run.add(pair)
                    bar.update(1)
                    bar.set_postfix(matches=record["matches"], refresh=False)
                    if on_pair is not None:
                        on_pair(record)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            run.close_bag()
        if not run.records:
            raise EvalError("interrupted before the first pair finished" if interrupted else
                            f"no pairs to evaluate: no {config.topic} frame had a partner "
                            f"(stereo pairs need header stamps within --sync-tolerance {config.sync_tolerance} s)")
        run.outcome.metrics = build_metrics(config, matcher, run.records, run.outcome.score_counts,
                                            partial=interrupted, wall_s=time.perf_counter() - started,
                                            expected=expected, tally=run.tally)
        write_report(staging / REPORT_FILE, run.outcome)
        write_json(staging / METRICS_FILE, run.outcome.metrics)
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if interrupted:
        raise KeyboardInterrupt
    return run.outcome


def first_frame_id(bag: Bag, topic: str) -> str:
    for raw in bag.raw_frames([topic]):
        return bag.deserialize(raw.data, raw.msgtype).header.frame_id
    return ""


def build_metrics(config: EvalConfig, matcher: Matcher, records: list[dict[str, Any]], score_counts: np.ndarray,
                  partial: bool, wall_s: float, expected: int, tally: FrameTally) -> dict[str, Any]:
    """The metrics.json document: versioned, self-describing, with every per-pair record."""
    summary = summarise(records, score_counts)
    if config.mode == "stereo" and not config.synthetic:
        summary["unpaired_frames"] = tally.unpaired((config.topic, config.topic1 or ""))
    return {
        "schema_version": SCHEMA_VERSION,
        "partial": partial,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": asdict(config) | {"expected_pairs": expected},
        "model": {"name": matcher.model_name, "weights": matcher.weights_id, "device": str(matcher.device),
                  "resize": matcher.resize,
                  "features": dict(matcher.extractor.config), "superglue": dict(matcher.superglue.config)},
        "wall_time_s": wall_s,
        "summary": summary,
        "pairs": records,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """JSON with non-finite numbers as null (strict JSON has no NaN/Infinity)."""
    import json

    path.write_text(json.dumps(_finite(document), indent=1) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return _finite(value.item())
    return value


def publish(staging: Path, out_dir: Path) -> None:
    """Rename staged outputs into place, metrics.json last: its presence marks a finished write."""
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    for name in (OUTPUT_BAG, REPORT_FILE, METRICS_FILE):
        source = staging / name
        target = out_dir / name
        if not source.exists():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(source, target)

