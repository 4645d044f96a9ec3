"""What ``launch/matcher.launch.py`` does with its arguments, without importing ``launch``.

Every launch argument defaults to the empty string, which means "not
given": only the arguments a user gave become parameter overrides, so a
value in the YAML file survives a launch without arguments. Given values are
parsed with the parameter table's types and ranges (lists also in ROS's
``[a, b]`` form), and a bad one is an error that names the argument. When
the node exits with an error (it could not configure), the launch shuts
down with the reason instead of carrying on without it.
"""
from __future__ import annotations

from typing import Any

from ..parameters import LAUNCH, in_scope

NAMESPACE = "superglue"
NODE_NAME = "superglue_matcher"
# Launch arguments that remap the node's camera topics (the single-camera layout).
TOPICS = {
    "image": ("image", "camera topic (sequential and keyframe modes)"),
    "left_image": ("left/image", "left camera topic (stereo mode)"),
    "right_image": ("right/image", "right camera topic (stereo mode)"),
}
EXTRA = {
    "params_file": "parameter YAML file (default: the package's config/matcher.yaml)",
    "namespace": f"namespace of the node and its output topics (default: {NAMESPACE})",
}


def declared_arguments() -> dict[str, str]:
    """Every launch argument and its description; each defaults to "" (not given)."""
    arguments = {parameter.name: f"{parameter.setting.description} (default: the YAML's, else "
                                 f"{'the model' + chr(39) + 's' if parameter.default is None else parameter.default})"
                 for parameter in in_scope(LAUNCH)}
    arguments.update({name: f"{text} (default: not remapped)" for name, (_, text) in TOPICS.items()})
    arguments.update(EXTRA)
    return arguments


def parameter_overrides(given: dict[str, str]) -> dict[str, Any]:
    """Typed node parameters for the launch arguments that were given (non-empty); ValueError naming
    the argument for a value its parameter refuses."""
    overrides = {}
    for parameter in in_scope(LAUNCH):
        text = given.get(parameter.name, "")
        if text == "":
            continue
        try:
            overrides[parameter.name] = parameter.parse(text)
        except ValueError as error:
            raise ValueError(f"launch argument {parameter.name}:={text!r}: {error}") from None
    return overrides


def node_parameters(params_file: str, given: dict[str, str]) -> list[Any]:
    """The node's ``parameters`` list: the YAML file, then only the overrides the user gave (later wins)."""
    overrides = parameter_overrides(given)
    return [params_file, overrides] if overrides else [params_file]


def remappings(given: dict[str, str]) -> list[tuple[str, str]]:
    """Topic remappings for the camera topics that were given, raw and compressed."""
    pairs = []
    for name, (topic, _) in TOPICS.items():
        target = given.get(name, "")
        if target:
            pairs += [(topic, target), (f"{topic}/compressed", f"{target}/compressed")]
    return pairs


def remapping_warnings(given: dict[str, str], cameras: list[str]) -> list[str]:
    """Why a given topic argument has no effect: with ``cameras`` each camera subscribes under its own
    namespace (``<camera>/image``), which the single-camera remappings do not name."""
    ignored = [name for name in TOPICS if given.get(name, "")]
    if not cameras or not ignored:
        return []
    return [f"{name}:= is ignored with cameras {cameras}: the node subscribes to "
            f"{', '.join(f'<namespace>/{camera}/image' for camera in cameras)}; remap those instead "
            f"(e.g. --ros-args -r {cameras[0]}/image:=/your/topic)" for name in ignored]


def exit_reason(returncode: int | None) -> str | None:
    """The launch's shutdown reason when the node exits with an error; None for a clean exit."""
    if not returncode:
        return None
    return (f"{NODE_NAME} exited with code {returncode} (it could not start or configure; its error is "
            f"above): shutting down")
