"""A fake camera and listener for the node's integration tests, run as its own process.

``python camera.py SPEC.json OUT.json``: publishes the frames listed in the
spec exactly as a camera driver would (sensor_msgs/Image or CompressedImage,
with stamps and frame ids), optionally sets node parameters through the
standard parameter service, and records every Matches / Homography /
DiagnosticArray message it receives (Matches also as raw CDR bytes) into
OUT.json. It is a separate process because the generated message module is
only importable from the colcon install, not from the source checkout.
"""
from __future__ import annotations

import array
import json
import sys
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter as RosParameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from superglue_ros.msg import Homography, Matches, RelativePose


def to_plain(msg: Any) -> Any:
    """Message -> JSON-able dict (arrays as lists)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: to_plain(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (array.array, np.ndarray)):
        return [float(v) if isinstance(v, float) else int(v) for v in msg.tolist()]
    if isinstance(msg, bytes):
        return list(msg)
    return msg


def image_message(frame: dict[str, Any]) -> Image | CompressedImage:
    stamp_ns = frame["stamp_ns"]
    if frame.get("format"):
        msg = CompressedImage(format=frame["format"])
        msg.data = array.array("B", bytes.fromhex(frame["data_hex"]))
    else:
        pixels = np.load(frame["file"]) if frame.get("file") else np.zeros((0, 0), np.uint8)
        msg = Image(height=frame.get("height", pixels.shape[0]), width=frame.get("width", pixels.shape[1] if
                                                                                 pixels.ndim > 1 else 0),
                    encoding=frame["encoding"], is_bigendian=0)
        msg.step = frame.get("step", int(pixels.strides[0]) if pixels.size else 0)
        msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame.get("frame_id", "camera")
    return msg


def change_state(node: Any, target: str, transition: str, spin_until) -> list:
    """Request a lifecycle transition ("configure", "activate", ...) of the node; [success, state after]."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    change = node.create_client(ChangeState, f"{target}/change_state")
    get = node.create_client(GetState, f"{target}/get_state")
    change.wait_for_service(timeout_sec=30)
    request = ChangeState.Request()
    request.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
    future = change.call_async(request)
    spin_until(future.done, time.monotonic() + 60)
    state = get.call_async(GetState.Request())
    spin_until(state.done, time.monotonic() + 10)
    return [bool(future.result() and future.result().success),
            state.result().current_state.label if state.result() else ""]


def parameter_message(name: str, value: Any) -> Parameter:
    return Parameter(name=name, value=RosParameter(name, value=value).get_parameter_value())


def call(node: Any, service: Any, name: str, request: Any) -> Any:
    client = node.create_client(service, name)
    client.wait_for_service(timeout_sec=20)
    future = client.call_async(request)
    rclpy.spin_until_future_complete(node, future, timeout_sec=20)
    return future.result()


def dump_parameters(node: Any, target: str) -> dict[str, list]:
    """Every parameter of the node as `ros2 param dump` reads them: list, then one bulk get; name ->
    [type, value] (type 0: not set)."""
    from rcl_interfaces.srv import GetParameters, ListParameters

    names = list(call(node, ListParameters, f"{target}/list_parameters", ListParameters.Request()).result.names)
    values = call(node, GetParameters, f"{target}/get_parameters", GetParameters.Request(names=names)).values
    return {name: [value.type, to_plain(RosParameter.from_parameter_msg(Parameter(name=name, value=value)).value)
                   if value.type else None] for name, value in zip(names, values)}


def run_steps(node: Any, target: str, steps: list, spin_until) -> list:
    """Parameter and lifecycle steps in order: ["set", name, value], ["transition", name], ["dump"]."""
    outcomes = []
    for step in steps:
        if step[0] == "set":
            outcome = call(node, SetParameters, f"{target}/set_parameters",
                           SetParameters.Request(parameters=[parameter_message(step[1], step[2])])).results[0]
            outcomes.append([outcome.successful, outcome.reason])
        elif step[0] == "transition":
            outcomes.append(change_state(node, target, step[1], spin_until))
        else:
            outcomes.append(dump_parameters(node, target))
    return outcomes


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    rclpy.init()
    node = rclpy.create_node("fake_camera")
    received: dict[str, list] = {"matches": [], "matches_cdr": [], "homography": [], "diagnostics": [],
                                 "debug_images": [], "states": [], "relative_pose": []}
    ns = spec.get("namespace", "/superglue")
    cameras = spec.get("cameras", [""])
    received["matches_by_camera"] = {camera: [] for camera in cameras}
    for camera in cameras:
        prefix = f"{ns}/{camera + '/' if camera else ''}"
        node.create_subscription(Matches, f"{prefix}matches", lambda m, c=camera: (
            received["matches"].append(to_plain(m)), received["matches_by_camera"][c].append(to_plain(m))), 10)
        node.create_subscription(Homography, f"{prefix}homography",
                                 lambda m: received["homography"].append(to_plain(m)), 10)
        node.create_subscription(RelativePose, f"{prefix}relative_pose",
                                 lambda m: received["relative_pose"].append(to_plain(m)), 10)
    node.create_subscription(Matches, f"{ns}/{cameras[0] + '/' if cameras[0] else ''}matches",
                             lambda raw: received["matches_cdr"].append(raw.hex()), 10, raw=True)
    if spec.get("watch_debug_image"):
        node.create_subscription(Image, f"{ns}/debug_image", lambda m: received["debug_images"].append(
            {"encoding": m.encoding, "height": m.height, "width": m.width, "bytes": len(m.data)}), 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: received["diagnostics"].extend(
        {kv.key: kv.value for kv in status.values} | {"_level": status.level[0], "_message": status.message,
                                                      "_name": status.name} for status in m.status), 10)
    qos = qos_profile_sensor_data if spec.get("reliability", "best_effort") == "best_effort" else \
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {}
    for frame in spec["frames"]:
        kind = CompressedImage if frame.get("format") else Image
        if frame["topic"] not in publishers:
            publishers[frame["topic"]] = node.create_publisher(kind, f"{ns}/{frame['topic']}", qos)
    deadline = time.monotonic() + spec.get("timeout", 60)

    def spin_until(condition, limit: float) -> bool:
        while time.monotonic() < limit:
            if condition():
                return True
            rclpy.spin_once(node, timeout_sec=0.05)
        return condition()

    results: dict[str, Any] = {"set_parameters": [], "transitions": []}
    results["steps"] = run_steps(node, spec["node"], spec.get("steps", []), spin_until)
    for transition in spec.get("lifecycle", []):
        results["transitions"].append(change_state(node, spec["node"], transition, spin_until))
    first_output = f"{ns}/{cameras[0] + '/' if cameras[0] else ''}matches"
    connected = spin_until(lambda: all(p.get_subscription_count() > 0 for p in publishers.values())
                           and node.count_publishers(first_output) > 0
                           and (not spec.get("watch_debug_image") or node.count_publishers(f"{ns}/debug_image") > 0),
                           deadline)
    results["connected"] = connected
    if spec.get("set_parameters"):
        client = node.create_client(SetParameters, f"{spec['node']}/set_parameters")
        client.wait_for_service(timeout_sec=20)
        for name, value in spec["set_parameters"]:
            future = client.call_async(SetParameters.Request(parameters=[parameter_message(name, value)]))
            rclpy.spin_until_future_complete(node, future, timeout_sec=20)
            outcome = future.result().results[0]
            results["set_parameters"].append([outcome.successful, outcome.reason])
    if spec.get("get_parameters"):
        from rcl_interfaces.srv import GetParameters

        client = node.create_client(GetParameters, f"{spec['node']}/get_parameters")
        client.wait_for_service(timeout_sec=20)
        future = client.call_async(GetParameters.Request(names=spec["get_parameters"]))
        rclpy.spin_until_future_complete(node, future, timeout_sec=20)
        results["parameters"] = {name: RosParameter.from_parameter_msg(Parameter(name=name, value=value)).value
                                 for name, value in zip(spec["get_parameters"], future.result().values)}
    for frame in spec["frames"]:
        publishers[frame["topic"]].publish(image_message(frame))
        spin_until(lambda: False, time.monotonic() + frame.get("delay", 0.0))
    expected = spec.get("expect_matches", 0)
    spin_until(lambda: len(received["matches"]) >= expected and len(received["homography"]) >= expected
               and len(received["debug_images"]) >= (expected if spec.get("watch_debug_image") else 0), deadline)
    settle_until = time.monotonic() + spec.get("settle", 0.0)
    spin_until(lambda: False, settle_until)
    for transition in spec.get("lifecycle_after", []):
        results["transitions"].append(change_state(node, spec["node"], transition, spin_until))
    results.update(received)
    open(out_path, "w").write(json.dumps(results))
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
