"""Ground truth recorded in a bag: camera poses over time and the camera's intrinsics.

Poses are read as camera-to-world poses of the camera's optical frame from
a pose, odometry or tf topic, and matched to each image by header stamp;
with tf, the transforms whose child frame is the image's ``frame_id`` are
used (direct transforms only, no tree lookup).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry.pose import quaternion_to_rotation, relative_pose
from ..stream.messages import Stamp
from .bagio import Bag
from .config import EvalConfig, EvalError

POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry", "geometry_msgs/msg/TransformStamped", "tf2_msgs/msg/TFMessage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


@dataclass(frozen=True)
class PoseTrack:
    """Camera-to-world poses over time, from a pose, odometry or tf topic."""

    times: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    nonfinite: int = 0  # poses left out because they held NaN or infinity

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
    finite = [(stamp, q, p) for stamp, q, p in entries if np.isfinite([q.x, q.y, q.z, q.w, p.x, p.y, p.z]).all()]
    if not finite:
        raise EvalError(f"--gt-topic {topic}: none of its {len(entries)} poses is finite (NaN or infinity)")
    entries, nonfinite = finite, len(entries) - len(finite)
    try:
        rotations = np.stack([quaternion_to_rotation(q.x, q.y, q.z, q.w) for _, q, _ in entries])
    except ValueError as error:
        raise EvalError(f"--gt-topic {topic}: {error}") from None
    translations = np.array([[p.x, p.y, p.z] for _, _, p in entries], dtype=np.float64)
    return PoseTrack(np.array([e[0] for e in entries], dtype=np.int64), rotations, translations, nonfinite)


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


def first_frame_id(bag: Bag, topic: str) -> str:
    for raw in bag.raw_frames([topic]):
        return bag.deserialize(raw.data, raw.msgtype).header.frame_id
    return ""


@dataclass(frozen=True)
class BagGroundTruth:
    """What pose scoring of a bag needs: the intrinsics, the pose track and how near in time a pose must be."""

    k: np.ndarray
    track: PoseTrack
    tolerance_ns: int
    unscored: Counter = field(default_factory=Counter)  # pairs without a usable pose, by reason

    def relative(self, stamp0_ns: int, stamp1_ns: int) -> np.ndarray | None:
        """T_0to1 (4x4) between the poses nearest to the two stamps, or None, counted by reason, when one is
        missing or the camera did not move (the pose error needs a translation direction)."""
        pose0, pose1 = self.track.at(stamp0_ns, self.tolerance_ns), self.track.at(stamp1_ns, self.tolerance_ns)
        if pose0 is None or pose1 is None:
            self.unscored["no pose within --gt-tolerance"] += 1
            return None
        rotation, translation = relative_pose(pose0[0], pose0[1], pose1[0], pose1[1])
        if not np.linalg.norm(translation) > 1e-9:
            self.unscored["no translation between the poses"] += 1
            return None
        t_0to1 = np.eye(4)
        t_0to1[:3, :3], t_0to1[:3, 3] = rotation, translation
        return t_0to1


def load_ground_truth(bag: Bag, config: EvalConfig) -> BagGroundTruth:
    frame_id = first_frame_id(bag, config.topic)
    return BagGroundTruth(load_intrinsics(bag, config), load_pose_track(bag, config.gt_topic or "", frame_id),
                          int(config.gt_tolerance * 1e9))
