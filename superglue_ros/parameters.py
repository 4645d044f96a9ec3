"""The one parameter table: every setting a user can give the node, the launch file or the command line.

Model settings come from the models' own declarations (their ranges,
meanings and checks); the rest is declared here. From this table come the
node's ROS parameter descriptors, ``config/matcher.yaml``, the launch
arguments, the command-line options and the README's table (tests keep the
files equal to what the table renders). A default of None means "not set":
the loaded model's own value applies (an open model's trained threshold, or
SuperPoint's detector settings), and the node reports the value it uses.
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, replace
from typing import Any

from .geometry import homography
from .inference import loading, matcher, preprocess
from .inference.model_files import BUNDLED_EXTRACTORS
from .models import sift, superglue, superpoint, xfeat
from .models.types import DEFAULT_BUDGET, MAX_KEYPOINTS
from .settings import Setting

SCOPES = ("node", "launch", "cli")


@dataclass(frozen=True)
class Parameter:
    """A setting, where users may give it, and where its value goes. ``read_only``: node parameters
    that take effect at configure (they load models or shape topics): the node accepts them only while
    unconfigured."""

    setting: Setting
    target: str  # where the value is applied: matcher, extractor, superglue, homography, pairing or node
    scopes: tuple[str, ...]
    read_only: bool = False
    flags: tuple[str, ...] = ()
    items: type = str  # of a list: names (str) or numbers (float)

    @property
    def name(self) -> str:
        return self.setting.name

    @property
    def default(self) -> Any:
        return self.setting.default

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.name.replace('_', '-')}",)

    def parse(self, text: str) -> Any:
        """A value from a launch argument or option; lists also in ROS's YAML form (``[a, b]``, ``['a']``)."""
        if self.setting.kind is list:
            text = text.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            text = ",".join(item.strip().strip("'\"") for item in text.split(","))
        return self.setting.parse(text)


def _setting(settings: tuple[Setting, ...], name: str, **changes: Any) -> Setting:
    found = next(s for s in settings if s.name == name)
    return replace(found, **changes) if changes else found


NODE, LAUNCH, CLI = "node", "launch", "cli"
# The ROS value of a model setting left unset (every such setting's range starts at 0): the loaded
# model's own value applies, and the node reports that value once configured.
MODEL_OWN = -1
PARAMETERS: tuple[Parameter, ...] = (
    Parameter(Setting("mode", str, "sequential", "stereo: left/right image pairs by approximate time; sequential: "
                      "each frame against the previous one; keyframe: against a keyframe replaced when tracking "
                      "degrades", choices=("stereo", "sequential", "keyframe")), "node", (NODE, LAUNCH), True),
    Parameter(Setting("cameras", list, [], "names of the cameras matched by this node, each on its own "
                      "namespace (`<camera>/image`, `<camera>/matches`, ...) with its own pairing state; pairs "
                      "ready together are matched as one batch (empty: one camera on `image`)"),
              "node", (NODE, LAUNCH), True),
    Parameter(Setting("input_type", str, "raw", "raw: sensor_msgs/Image on `image`; compressed: "
                      "sensor_msgs/CompressedImage on `image/compressed` (stereo: `left/...`, `right/...`)",
                      choices=("raw", "compressed")), "node", (NODE, LAUNCH), True),
    Parameter(Setting("image_reliability", str, "best_effort", "QoS of the image subscriptions: best_effort is "
                      "SensorDataQoS (what camera drivers publish), reliable for recorded or relayed streams",
                      choices=("best_effort", "reliable")), "node", (NODE, LAUNCH), True),
    Parameter(loading.WEIGHTS, "matcher", SCOPES, True),
    Parameter(loading.WEIGHTS_DIR, "matcher", SCOPES, True),
    Parameter(loading.SUPERPOINT_WEIGHTS, "matcher", SCOPES, True),
    Parameter(loading.SUPERGLUE_WEIGHTS, "matcher", SCOPES, True),
    Parameter(matcher.DEVICE, "matcher", SCOPES, True),
    Parameter(matcher.PRECISION, "matcher", SCOPES, True),
    Parameter(matcher.BACKEND, "matcher", SCOPES, True),
    Parameter(matcher.ONNX_DIR, "matcher", SCOPES, True),
    Parameter(preprocess.RESIZE_WIDTH, "matcher", (NODE, LAUNCH), True),
    Parameter(preprocess.RESIZE_HEIGHT, "matcher", (NODE, LAUNCH), True),
    Parameter(preprocess.MAX_IMAGE_PIXELS, "matcher", SCOPES),
    Parameter(replace(MAX_KEYPOINTS, default=DEFAULT_BUDGET), "extractor", SCOPES),
    Parameter(_setting(superpoint.SETTINGS, "keypoint_threshold", default=None), "extractor", SCOPES),
    Parameter(_setting(superpoint.SETTINGS, "nms_radius", default=None,
                       description="non-maximum suppression radius of SuperPoint or XFeat [pixels]"),
              "extractor", SCOPES),
    Parameter(_setting(superglue.SETTINGS, "sinkhorn_iterations", default=None), "superglue", SCOPES),
    Parameter(_setting(superglue.SETTINGS, "match_threshold", default=None), "superglue", SCOPES),
    Parameter(_setting(superglue.SETTINGS, "sinkhorn_tolerance", default=None), "superglue", (NODE, CLI)),
    Parameter(Setting("camera_matrix", list, [], "intrinsics K (3x3 row-major, pixels of the camera's "
                      "images) for the `relative_pose` output of every camera, used where no `camera_info` has "
                      "arrived (empty: `camera_info` only)"), "node", (NODE,), items=float),
    Parameter(Setting("slop", float, 0.02, "stereo: largest stamp difference of a pair [seconds]", 0.0, 10.0),
              "pairing", (NODE, CLI), flags=("--slop", "--sync-tolerance")),
    Parameter(Setting("sync_queue_size", int, 10, "stereo: unpaired frames kept per camera while waiting for a "
                      "partner", 1, 1000), "node", (NODE,), True),
    Parameter(homography.METHOD, "homography", (NODE, CLI)),
    Parameter(homography.THRESHOLD, "homography", (NODE, CLI),
              flags=("--reprojection-threshold", "--ransac-threshold")),
    Parameter(homography.MIN_MATCHES, "homography", (NODE, CLI)),
    Parameter(Setting("keyframe_min_inlier_ratio", float, 0.3, "keyframe mode: replace the keyframe when the "
                      "inlier ratio falls below this", 0.0, 1.0), "node", (NODE,)),
    Parameter(Setting("keyframe_min_matches", int, 30, "keyframe mode: replace the keyframe when fewer matches "
                      "remain", 0, 100000), "node", (NODE,)),
    Parameter(Setting("max_reference_age", float, 5.0, "sequential and keyframe modes: a reference frame older "
                      "than this (stamp difference) is replaced instead of matched [seconds]; 0: no limit",
                      0.0, 86400.0), "node", (NODE,)),
    Parameter(Setting("diagnostics_period", float, 1.0, "seconds between /diagnostics messages", 0.1, 60.0),
              "node", (NODE,), True),
    Parameter(Setting("autostart", bool, True, "configure and activate the lifecycle node at start-up "
                      "(false: wait for lifecycle transitions)"), "node", (NODE, LAUNCH), True),
)

BY_NAME = {parameter.name: parameter for parameter in PARAMETERS}
DEFAULTS = {parameter.name: parameter.default for parameter in PARAMETERS}


def in_scope(scope: str) -> list[Parameter]:
    return [parameter for parameter in PARAMETERS if scope in parameter.scopes]


def validate(name: str, value: Any) -> Any:
    """The value as the parameter holds it; ValueError naming the parameter and what it accepts."""
    if name not in BY_NAME:
        raise ValueError(f"unknown parameter {name!r}")
    if value is None:
        return None
    parameter = BY_NAME[name]
    if parameter.setting.kind is list:
        return check_names(name, value) if parameter.items is str else check_camera_matrix(name, value)
    return parameter.setting.check(value)


def check_camera_matrix(name: str, value: Any) -> list[float]:
    """Empty, or 9 finite numbers of a 3x3 K with positive focal lengths and last row 0, 0, 1."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{name} must be a list of numbers, got {value!r}")
    k = [float(v) for v in value]
    if k and (len(k) != 9 or k[0] <= 0 or k[4] <= 0 or k[6:] != [0.0, 0.0, 1.0]):
        raise ValueError(f"{name} must be empty or the 9 numbers of K row by row [fx, 0, cx, 0, fy, cy, 0, 0, 1] "
                         f"(fx, fy > 0), got {list(value)!r}")
    return k


def check_names(name: str, value: Any) -> list[str]:
    """A list of distinct ROS name tokens (letters, digits, underscores, not starting with a digit)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of names, got {value!r}")
    for item in value:
        if not item or not item.replace("_", "a").isalnum() or item[0].isdigit() or not item.isascii():
            raise ValueError(f"{name}: {item!r} is not a valid ROS name (letters, digits and underscores, "
                             f"not starting with a digit)")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} lists a camera twice: {list(value)}")
    return list(value)


def resolve(given: dict[str, Any]) -> dict[str, Any]:
    """Defaults updated with the validated values a user gave (None: not set), checked together."""
    values = dict(DEFAULTS)
    for name, value in given.items():
        values[name] = validate(name, value)
    check_together(values)
    return values


def check_together(values: dict[str, Any]) -> None:
    """ValueError for values that are each valid but do not go together."""
    if bool(values.get("resize_width")) != bool(values.get("resize_height")):
        raise ValueError(f"resize_width and resize_height go together: give both, or neither (0) to keep the "
                         f"camera's size; got resize_width={values.get('resize_width')}, "
                         f"resize_height={values.get('resize_height')}")
    extractor = front_end(values)
    every = set().union(*EXTRACTOR_SETTINGS.values())
    foreign = every - EXTRACTOR_SETTINGS.get(extractor, every)
    for name in sorted(foreign):
        if values.get(name) is not None:
            raise ValueError(f"{name} does not apply to the {extractor.upper()} extractor of weights "
                             f"{values['weights']!r} (leave it unset: {MODEL_OWN} in ROS)")


# The settings each keypoint extractor has; a value for another extractor's setting is refused.
EXTRACTOR_SETTINGS = {"superpoint": {s.name for s in superpoint.SETTINGS}, "sift": {s.name for s in sift.SETTINGS},
                      "xfeat": {s.name for s in xfeat.SETTINGS}}


def front_end(values: dict[str, Any]) -> str | None:
    """The keypoint extractor the weights settings load ("superpoint", "sift" or "xfeat"), without loading
    them; None for a model file, whose extractor is known once it is loaded."""
    weights = values.get("weights", DEFAULTS["weights"])
    if values.get("superpoint_weights") or values.get("superglue_weights") or weights in loading.OFFICIAL_SUPERGLUE:
        return "superpoint"
    if weights == "auto":
        return "superpoint" if loading.official_available(values.get("weights_dir") or None) else "sift"
    return BUNDLED_EXTRACTORS.get(weights)


def matcher_arguments(values: dict[str, Any]) -> dict[str, Any]:
    """Matcher keyword arguments for resolved values; settings left unset leave the model's own."""
    def given(target: str) -> dict[str, Any]:
        return {p.name: values[p.name] for p in PARAMETERS if p.target == target and values.get(p.name) is not None}

    resize = None
    if values.get("resize_width") and values.get("resize_height"):
        resize = (values["resize_width"], values["resize_height"])
    return {"weights": values["weights"], "weights_dir": values["weights_dir"] or None,
            "superpoint_weights": values["superpoint_weights"] or None,
            "superglue_weights": values["superglue_weights"] or None, "device": values["device"],
            "resize": resize, "precision": values["precision"], "backend": values["backend"],
            "onnx_dir": values["onnx_dir"] or None, "max_image_pixels": values["max_image_pixels"],
            "extractor": given("extractor"), "superglue": given("superglue")}


def type_name(parameter: Parameter) -> str:
    kind = parameter.setting.kind
    if kind is list:
        return "double[]" if parameter.items is float else "string[]"
    return {bool: "bool", int: "int", float: "double", str: "string"}[kind]


def default_text(parameter: Parameter) -> str:
    return f"(the model's; `{MODEL_OWN}` in ROS)" if parameter.default is None else \
        f"`{json.dumps(parameter.default)}`"


def ros_default(parameter: Parameter) -> Any:
    """What the node's parameter holds when nobody set it: the table's default, or :data:`MODEL_OWN`."""
    if parameter.default is not None:
        return parameter.default
    return float(MODEL_OWN) if parameter.setting.kind is float else MODEL_OWN


def from_ros(parameter: Parameter, value: Any) -> Any:
    """A node parameter's value as the table holds it: :data:`MODEL_OWN` of a model setting is None."""
    if parameter.default is None and value == MODEL_OWN:
        return None
    return list(value) if parameter.setting.kind is list else value


def render_yaml() -> str:
    """``config/matcher.yaml`` as it must read: every node parameter, its default and its documentation.
    Parameters whose default is the model's own are listed commented out."""
    lines = ["# Parameters of the superglue_ros matcher node, with their defaults. Generated from",
             "# superglue_ros/parameters.py (a test keeps the two equal). Used by launch/matcher.launch.py",
             "# and by `superglue-ros node --params-file config/matcher.yaml`. Lines starting with `# name:`",
             "# are not set: the loaded model's own value applies; uncomment one to override it.",
             "/**:", "  ros__parameters:"]
    for parameter in in_scope(NODE):
        setting = parameter.setting
        text = setting.description + (f" ({setting.range_text})" if setting.range_text else "")
        text += " [set while unconfigured: applies at configure]" if parameter.read_only else ""
        lines += [f"    # {line}" for line in textwrap.wrap(text, 96)]
        if parameter.default in (None, []):
            lines.append(f"    # {parameter.name}: {json.dumps(example_value(parameter))}")
        else:
            lines.append(f"    {parameter.name}: {json.dumps(parameter.default)}")
    return "\n".join(lines) + "\n"


def example_value(parameter: Parameter) -> Any:
    """Shown in the YAML for a parameter that is not set by default: what the official weights use,
    or an example list."""
    if parameter.setting.kind is list:
        return [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0] if parameter.items is float else ["front", "rear"]
    source = superpoint.DEFAULT_CONFIG if parameter.target == "extractor" else superglue.DEFAULT_CONFIG
    return source[parameter.name]


def render_markdown() -> str:
    """The README's parameter table."""
    rows = ["| name | type | default | range | where | meaning |", "|---|---|---|---|---|---|"]
    for parameter in PARAMETERS:
        where = ", ".join(scope if scope != CLI else "/".join(f"`{f}`" for f in parameter.cli_flags)
                          for scope in parameter.scopes)
        meaning = parameter.setting.description + (" (configure-time)" if parameter.read_only else "")
        rows.append(f"| `{parameter.name}` | {type_name(parameter)} | {default_text(parameter)} | "
                    f"{parameter.setting.range_text} | {where} | {meaning} |")
    return "\n".join(rows) + "\n"
