"""The rclpy matcher node: a thin shell around :mod:`superglue_ros.ros.core`.

Subscription callbacks only stamp frames and hand complete jobs to a one-slot
mailbox; a worker thread runs inference on the newest job, so the executor
stays responsive and a slow model drops (and counts) frames instead of
building up latency. Everything else (pairing, matching, message contents,
validation, counters) lives in ROS-free modules.
"""
from __future__ import annotations

import array
import threading
import time
from typing import Any

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter as RosParameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from .image_codec import COMPRESSED_IMAGE, RAW_IMAGE
from .messages import Stamp
from ..msg import Homography, Matches
from .core import Job, MatcherCore, Output, debug_image, matcher_from_parameters
from .pairing import LatestSlot, StampedFrame
from ..parameters import PARAMETERS, Parameter, resolve
from ..inference.weights import WeightsError

NODE_NAME = "superglue_matcher"
WORKER_POLL_S = 0.2
WARN_THROTTLE_S = 5.0


class MatcherNode(Node):
    """Subscribes to camera images, publishes Matches, Homography, a debug image and diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for parameter in PARAMETERS:
            self.declare_parameter(parameter.name, parameter.default, descriptor(parameter))
        values = {p.name: self.get_parameter(p.name).value for p in PARAMETERS}
        self.core = MatcherCore.create(matcher_from_parameters(resolve(values)), values)
        self.slot: LatestSlot[Job] = LatestSlot()
        self.model_lock = threading.Lock()
        self.accept_lock = threading.Lock()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.matches_pub = self.create_publisher(Matches, "matches", reliable)
        self.homography_pub = self.create_publisher(Homography, "homography", reliable)
        self.debug_pub = self.create_publisher(Image, "debug_image", reliable)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self._subscribe(values)
        self.create_timer(values["diagnostics_period"], self._publish_diagnostics)
        self.worker = threading.Thread(target=self._work, name="superglue_worker", daemon=True)
        self.worker.start()
        self.get_logger().info(f"{values['mode']} matching with {self.core.matcher.model_name} on "
                               f"{self.core.matcher.device}, publishing on {self.matches_pub.topic_name}")

    def _subscribe(self, values: dict[str, Any]) -> None:
        compressed = values["input_type"] == "compressed"
        msg_class, self.msgtype = (CompressedImage, COMPRESSED_IMAGE) if compressed else (Image, RAW_IMAGE)
        qos = qos_profile_sensor_data if values["image_reliability"] == "best_effort" else \
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        suffix = "image/compressed" if compressed else "image"
        bases = ("left/", "right/") if values["mode"] == "stereo" else ("",)
        self.image_subs = [
            self.create_subscription(msg_class, base + suffix, lambda msg, side=side: self._on_image(side, msg), qos)
            for side, base in enumerate(bases)]

    def _on_image(self, side: int, msg: Any) -> None:
        stamp = Stamp.from_header(msg.header)
        frame = StampedFrame(stamp.nanoseconds, msg, time.monotonic(), stamp.frame_id)
        with self.accept_lock:
            job = self.core.accept(side, frame, self.msgtype)
            if job is not None and self.slot.put(job):
                self.core.counters.dropped_busy += 1

    def _work(self) -> None:
        while rclpy.ok():
            job = self.slot.take(WORKER_POLL_S)
            if job is None:
                continue
            with self.model_lock:
                output, problem = self.core.run(job)
            if problem:
                self.get_logger().warning(problem, throttle_duration_sec=WARN_THROTTLE_S)
            if output is not None:
                self._publish(output)

    def _publish(self, output: Output) -> None:
        self.matches_pub.publish(fill(Matches(), output.matches))
        self.homography_pub.publish(fill(Homography(), output.homography))
        self.core.counters.published += 1
        if self.debug_pub.get_subscription_count() > 0:
            self.debug_pub.publish(image_message(debug_image(output), output.matches["header"]))

    def _publish_diagnostics(self) -> None:
        level, summary, values = self.core.diagnostics()
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.get_fully_qualified_name()}: matcher",
                                  message=summary, hardware_id=str(self.core.matcher.device),
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array_msg)

    def _on_set_parameters(self, parameters: list[RosParameter]) -> SetParametersResult:
        """Validate and apply updates one by one; the first bad value rejects the whole set."""
        with self.model_lock:
            previous = dict(self.core.params)
            try:
                for parameter in parameters:
                    self.core.update(parameter.name, parameter.value)
            except ValueError as error:
                for name, value in previous.items():
                    if self.core.params[name] != value:
                        self.core.update(name, value)
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def shutdown(self) -> None:
        self.slot.close()
        self.worker.join(timeout=5.0)


def descriptor(parameter: Parameter) -> ParameterDescriptor:
    """ROS parameter descriptor with the table's description, range and read-only flag."""
    result = ParameterDescriptor(description=parameter.description, read_only=parameter.read_only)
    if parameter.choices:
        result.additional_constraints = f"one of: {parameter.range_text}"
    elif isinstance(parameter.default, int) and not isinstance(parameter.default, bool):
        result.integer_range = [IntegerRange(from_value=int(parameter.minimum), to_value=int(parameter.maximum),
                                             step=0)]
    elif isinstance(parameter.default, float):
        result.floating_point_range = [FloatingPointRange(from_value=float(parameter.minimum),
                                                          to_value=float(parameter.maximum), step=0.0)]
    return result


def fill(msg: Any, fields: dict[str, Any]) -> Any:
    """Copy a core field dict into a generated message; arrays go in as raw buffers (fast)."""
    types = msg.get_fields_and_field_types()
    for name, value in fields.items():
        if isinstance(value, dict):
            fill(getattr(msg, name), value)
        elif isinstance(value, np.ndarray) and types[name].startswith("sequence<"):
            buffer = array.array(ARRAY_TYPECODES[value.dtype.str[1:]])
            buffer.frombytes(value.tobytes())
            setattr(msg, name, buffer)
        elif isinstance(value, np.generic):
            setattr(msg, name, value.item())
        else:
            setattr(msg, name, value)
    return msg


ARRAY_TYPECODES = {"f4": "f", "f8": "d", "u4": "I", "i4": "i", "u1": "B"}


def image_message(image: np.ndarray, header: dict[str, Any]) -> Image:
    msg = fill(Image(), {"header": header})
    msg.height, msg.width = image.shape[:2]
    msg.encoding, msg.is_bigendian, msg.step = "bgr8", 0, image.shape[1] * 3
    msg.data = array.array("B", np.ascontiguousarray(image).tobytes())
    return msg


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = MatcherNode()
    except (ValueError, WeightsError) as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {error}")
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
