"""The matcher node's parameters: one table for declaration, validation, config and docs.

The rclpy node declares every entry with a descriptor (description, range,
read-only flag), validates run-time updates with :func:`validate`, and the
README table and ``config/matcher.yaml`` list the same names and defaults, so
there is one place to change a parameter. No ROS import here.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from typing import Any

from .geometry.homography import METHODS
from .settings import check_choice, check_number


@dataclass(frozen=True)
class Parameter:
    """One node parameter; ``read_only`` ones need a restart (they shape topics or load models)."""

    name: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False

    @property
    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.minimum is not None or self.maximum is not None:
            return f"[{self.minimum}, {self.maximum}]"
        return ""


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("mode", "sequential", "stereo: left/right image pairs by approximate time; sequential: each frame "
              "against the previous one; keyframe: against a keyframe replaced when tracking degrades",
              choices=("stereo", "sequential", "keyframe"), read_only=True),
    Parameter("input_type", "raw", "raw: sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage "
              "on `image/compressed` (stereo: `left/...`, `right/...`)", choices=("raw", "compressed"),
              read_only=True),
    Parameter("image_reliability", "best_effort", "QoS of the image subscriptions: best_effort is "
              "SensorDataQoS (what camera drivers publish), reliable for recorded or relayed streams",
              choices=("best_effort", "reliable"), read_only=True),
    Parameter("weights", "auto", "model: official indoor/outdoor SuperGlue weights, the bundled open models "
              "sift_open and sift_open_large (deeper, GNN twice as slow, superseded by sift_open), or auto "
              "(official indoor when found, else sift_open)",
              choices=("auto", "indoor", "outdoor", "sift_open", "sift_open_large"), read_only=True),
    Parameter("weights_dir", "", "folder with the weight files (empty: $SUPERGLUE_ROS_WEIGHTS_DIR, then "
              "~/.cache/superglue_ros)", read_only=True),
    Parameter("superpoint_weights", "", "explicit SuperPoint weight file (overrides the lookup)", read_only=True),
    Parameter("superglue_weights", "", "explicit SuperGlue weight file (overrides `weights`)", read_only=True),
    Parameter("device", "cpu", "cpu, cuda or cuda:N", read_only=True),
    Parameter("precision", "fp32", "fp32 is exact; bf16 (CPU) or fp16 (CUDA) is faster",
              choices=("fp32", "bf16", "fp16"), read_only=True),
    Parameter("backend", "torch", "torch, or onnxruntime (exported fp32 graphs; about 2x faster on CPU, "
              "near-exact)", choices=("torch", "onnxruntime"), read_only=True),
    Parameter("onnx_dir", "", "backend onnxruntime: folder for the exported graphs, reused across starts "
              "(empty: export to a temporary folder at every start)", read_only=True),
    Parameter("resize_width", 0, "network input width in pixels, 0 keeps the camera's size (with "
              "resize_height)", 0, 16384, read_only=True),
    Parameter("resize_height", 0, "network input height in pixels, 0 keeps the camera's size", 0, 16384,
              read_only=True),
    Parameter("max_keypoints", 1024, "SuperPoint keypoint budget per image, -1 for no limit", -1, 16384),
    Parameter("keypoint_threshold", 0.005, "SuperPoint detector threshold", 0.0, 1.0),
    Parameter("nms_radius", 4, "SuperPoint non-maximum suppression radius [pixels]", 1, 64),
    Parameter("sinkhorn_iterations", 100, "Sinkhorn iterations of the optimal transport", 1, 1000),
    Parameter("match_threshold", 0.2, "minimum matching score of an accepted match", 0.0, 1.0),
    Parameter("slop", 0.02, "stereo: largest stamp difference of a pair [seconds]", 0.0, 10.0),
    Parameter("sync_queue_size", 10, "stereo: unpaired frames kept per camera while waiting for a partner",
              1, 1000, read_only=True),
    Parameter("homography_method", "ransac", "OpenCV robust estimator", choices=tuple(METHODS)),
    Parameter("reprojection_threshold", 3.0, "inlier threshold of the homography [pixels]", 0.1, 100.0),
    Parameter("min_matches", 8, "fewest inliers for a valid homography", 4, 100000),
    Parameter("keyframe_min_inlier_ratio", 0.3, "keyframe mode: replace the keyframe when the inlier ratio "
              "falls below this", 0.0, 1.0),
    Parameter("keyframe_min_matches", 30, "keyframe mode: replace the keyframe when fewer matches remain",
              0, 100000),
    Parameter("diagnostics_period", 1.0, "seconds between /diagnostics messages", 0.1, 60.0, read_only=True),
)

BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}
DEFAULTS = {parameter.name: parameter.default for parameter in PARAMETERS}


def validate(name: str, value: Any) -> None:
    """Raise ValueError naming the parameter and its allowed values when ``value`` is not acceptable."""
    if name not in BY_NAME:
        raise ValueError(f"unknown parameter {name!r}")
    parameter = BY_NAME[name]
    if parameter.choices:
        check_choice(name, value, parameter.choices)
    elif isinstance(parameter.default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif isinstance(parameter.default, (int, float)):
        check_number(name, coerce(name, value), parameter.minimum, parameter.maximum,
                     integer=isinstance(parameter.default, int))
    elif not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")


def resolve(overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated with validated overrides (integers accepted where floats are expected)."""
    values = dict(DEFAULTS)
    for name, value in overrides.items():
        validate(name, value)
        values[name] = coerce(name, value)
    return values


def coerce(name: str, value: Any) -> Any:
    """The value as the parameter holds it: an integer given for a float parameter (YAML's
    ``1`` for ``1.0``, a ``ros2 param set`` without a decimal point) becomes a float."""
    if isinstance(BY_NAME[name].default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def render_yaml() -> str:
    """``config/matcher.yaml`` as it must read: every parameter, its default and its documentation."""
    lines = ["# Parameters of the superglue_ros matcher node, with their defaults. Generated from",
             "# superglue_ros/parameters.py (a test keeps the two equal). Used by launch/matcher.launch.py",
             "# and by `superglue-ros node --params-file config/matcher.yaml`.",
             "/**:", "  ros__parameters:"]
    for parameter in PARAMETERS:
        text = parameter.description + (f" ({parameter.range_text})" if parameter.range_text else "")
        text += " [read-only: restart to change]" if parameter.read_only else ""
        lines += [f"    # {line}" for line in textwrap.wrap(text, 96)]
        lines.append(f"    {parameter.name}: {json.dumps(parameter.default)}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The README's parameter table."""
    rows = ["| name | type | default | range | meaning |", "|---|---|---|---|---|"]
    for parameter in PARAMETERS:
        kind = type(parameter.default).__name__.replace("str", "string").replace("float", "double")
        meaning = parameter.description + (" (read-only)" if parameter.read_only else "")
        rows.append(f"| `{parameter.name}` | {kind} | `{json.dumps(parameter.default)}` | "
                    f"{parameter.range_text} | {meaning} |")
    return "\n".join(rows) + "\n"
