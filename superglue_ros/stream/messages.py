"""Build Matches / Homography / RelativePose message contents from numpy, without any ROS import.

Messages are returned as plain dicts keyed exactly by the field names in
``msg/*.msg`` (headers as nested dicts), with arrays already in the dtype of
the message field. Each middleware adapter (the rclpy node, the rosbags
writer of the evaluation tool) only copies these values into its own message
classes, so what a robot receives live and what an evaluation bag holds are
the same numbers by construction.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..geometry.homography import HomographyEstimate
from ..inference.matcher import PairMatch

PACKAGE = "superglue_ros"
MODES = {"stereo": 0, "sequential": 1, "keyframe": 2}


@dataclass(frozen=True)
class Stamp:
    """Header stamp and frame of one image, as the camera driver sent it."""

    sec: int
    nanosec: int
    frame_id: str = ""

    @staticmethod
    def from_header(header: Any) -> "Stamp":
        """From a std_msgs/Header of any message implementation (rclpy, rosbags)."""
        return Stamp(int(header.stamp.sec), int(header.stamp.nanosec), header.frame_id)

    @staticmethod
    def from_nanoseconds(nanoseconds: int, frame_id: str = "") -> "Stamp":
        return Stamp(int(nanoseconds // 1_000_000_000), int(nanoseconds % 1_000_000_000), frame_id)

    @property
    def nanoseconds(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec

    def header(self) -> dict[str, Any]:
        return {"stamp": {"sec": self.sec, "nanosec": self.nanosec}, "frame_id": self.frame_id}


def msg_dir() -> Path:
    """Where the .msg files are: the source checkout, or ``share/superglue_ros/msg`` of a pip install
    (the interpreter's prefix) or of a colcon install (the ament prefixes)."""
    prefixes = [Path(sys.prefix), *(Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p)]
    candidates = [Path(__file__).resolve().parents[2] / "msg", *(p / "share" / PACKAGE / "msg" for p in prefixes)]
    for candidate in candidates:
        if (candidate / "Matches.msg").is_file():
            return candidate
    raise FileNotFoundError(f"message definitions not found in {', '.join(map(str, candidates))}")


def msg_definitions() -> dict[str, str]:
    """``{'superglue_ros/msg/Matches': text, ...}``: every message this package defines."""
    return {f"{PACKAGE}/msg/{path.stem}": path.read_text() for path in sorted(msg_dir().glob("*.msg"))}


def matches_fields(pair: PairMatch, current: Stamp, reference: Stamp, mode: str,
                   model: str, weights: str, processing_time: float) -> dict[str, Any]:
    """Matches.msg contents for one matched pair (image 0 = reference, image 1 = current)."""
    features0, features1 = pair.features0, pair.features1
    return {
        "header": current.header(),
        "reference_header": reference.header(),
        "mode": np.uint8(MODES[mode]),
        "reference_height": int(features0.image_size[0]),
        "reference_width": int(features0.image_size[1]),
        "height": int(features1.image_size[0]),
        "width": int(features1.image_size[1]),
        "reference_keypoints": _flat(features0.keypoints, np.float32),
        "reference_scores": _flat(features0.scores, np.float32),
        "keypoints": _flat(features1.keypoints, np.float32),
        "scores": _flat(features1.scores, np.float32),
        "matches": _flat(pair.result.pairs(), np.uint32),
        "confidences": _flat(pair.result.confidences(), np.float32),
        "model": model,
        "weights": weights,
        "processing_time": float(processing_time),
    }


def homography_fields(estimate: HomographyEstimate, current: Stamp, reference: Stamp) -> dict[str, Any]:
    """Homography.msg contents; an invalid estimate carries the identity and its reason."""
    return {
        "header": current.header(),
        "reference_header": reference.header(),
        "h": np.ascontiguousarray(estimate.h, dtype=np.float64).reshape(9),
        "valid": bool(estimate.valid),
        "reason": estimate.reason,
        "num_inliers": int(estimate.num_inliers),
        "num_matches": int(estimate.num_matches),
        "reprojection_threshold": float(estimate.threshold),
    }


def _flat(values: Any, dtype: type) -> np.ndarray:
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1)


def relative_pose_fields(current: Stamp, reference: Stamp,
                         estimate: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                         num_matches: int, reason: str) -> dict[str, Any]:
    """RelativePose.msg contents from ``estimate_relative_pose``'s (R, t, inlier mask); None (with a
    reason) is an invalid pose carrying the identity and a zero translation."""
    rotation, translation, inliers = (np.eye(3), np.zeros(3), np.zeros(0, bool)) if estimate is None else estimate
    translation = np.asarray(translation, dtype=np.float64).reshape(3)
    norm = float(np.linalg.norm(translation))
    valid = estimate is not None and norm > 0
    if estimate is not None and not valid:
        reason = "the translation has no direction"
    return {
        "header": current.header(),
        "reference_header": reference.header(),
        "rotation": np.ascontiguousarray(rotation if valid else np.eye(3), dtype=np.float64).reshape(9),
        "translation": translation / norm if valid else np.zeros(3),
        "valid": bool(valid),
        "reason": "" if valid else reason,
        "num_inliers": int(np.count_nonzero(inliers)) if valid else 0,
        "num_matches": int(num_matches),
    }
