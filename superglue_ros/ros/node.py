"""The rclpy matcher node: a managed (lifecycle) node and a thin shell around :mod:`superglue_ros.stream.core`.

configure loads the weights and warms the models up, activate creates the
subscriptions and publishers, deactivate stops taking frames, cleanup frees
the models (and CUDA memory); with ``autostart`` (the default) the node
configures and activates itself, so one launch command starts it.
Subscription callbacks only stamp frames and hand complete jobs to one
latest-frame slot per camera; a worker thread matches the pending jobs of
all cameras as one batch, so the executor stays responsive and a slow model
drops (and counts) frames instead of building up latency. The worker
survives any failure: everything is counted in /diagnostics by reason.
"""
from __future__ import annotations

import array
import signal
import threading
import time
from types import FrameType
from typing import Any

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter as RosParameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ..inference.matcher import Matcher
from ..inference.weights import WeightsError
from ..files.outputs import OutputError
from ..parameters import NODE, Parameter, in_scope, matcher_arguments, resolve, validate
from ..settings import Setting
from ..stream.core import SINGLE, Job, MatcherCore, Output, debug_image
from ..stream.image_codec import COMPRESSED_IMAGE, RAW_IMAGE
from ..stream.messages import Stamp
from ..msg import Homography, Matches
from ..stream.pairing import LatestSlots, StampedFrame

NODE_NAME = "superglue_matcher"
WORKER_POLL_S = 0.2
SPIN_POLL_S = 0.25
WARN_THROTTLE_S = 5.0
ROS_TYPES = {bool: RosParameter.Type.BOOL, int: RosParameter.Type.INTEGER, float: RosParameter.Type.DOUBLE,
             str: RosParameter.Type.STRING, list: RosParameter.Type.STRING_ARRAY}
START_FAILURES = (ValueError, WeightsError, OutputError, OSError, RuntimeError, ModuleNotFoundError)


class CameraEndpoints:
    """One camera's subscriptions and publishers (created on activate, destroyed on deactivate)."""

    def __init__(self, node: "MatcherNode", camera: str, values: dict[str, Any]) -> None:
        prefix = f"{camera}/" if camera else ""
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.matches = node.create_publisher(Matches, prefix + "matches", reliable)
        self.homography = node.create_publisher(Homography, prefix + "homography", reliable)
        self.debug = node.create_publisher(Image, prefix + "debug_image", reliable)
        compressed = values["input_type"] == "compressed"
        msg_class = CompressedImage if compressed else Image
        qos = qos_profile_sensor_data if values["image_reliability"] == "best_effort" else \
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        suffix = "image/compressed" if compressed else "image"
        sides = ("left/", "right/") if values["mode"] == "stereo" else ("",)
        self.subscriptions = [
            node.create_subscription(msg_class, prefix + side + suffix,
                                     lambda msg, s=index: node.on_image(camera, s, msg), qos,
                                     **lost_message_counter(node, camera))
            for index, side in enumerate(sides)]
        self.topics = [subscription.topic_name for subscription in self.subscriptions]

    def destroy(self, node: "MatcherNode") -> None:
        for subscription in self.subscriptions:
            node.destroy_subscription(subscription)
        for publisher in (self.matches, self.homography, self.debug):
            node.destroy_publisher(publisher)


def lost_message_counter(node: "MatcherNode", camera: str) -> dict[str, Any]:
    """Count what the transport reports lost (best-effort frames that never arrived), where the
    middleware reports it."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # older rclpy
        return {}
    return {"event_callbacks": SubscriptionEventCallbacks(
        message_lost=lambda info: node.count_lost(camera, int(info.total_count_change)))}


class MatcherNode(LifecycleNode):
    """Subscribes to camera images, publishes Matches, Homography, a debug image and diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.parameters = in_scope(NODE)
        for parameter in self.parameters:
            default = parameter.default if parameter.default not in (None, []) else ROS_TYPES[parameter.setting.kind]
            self.declare_parameter(parameter.name, default, descriptor(parameter))
        self.core: MatcherCore | None = None
        self.endpoints: dict[str, CameraEndpoints] = {}
        self.slots: LatestSlots[Job] = LatestSlots()
        self.model_lock = threading.Lock()
        self.accept_lock = threading.Lock()
        self.worker: threading.Thread | None = None
        self.diagnostics_timer = None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics",
                                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def given_values(self) -> dict[str, Any]:
        """The node parameters the user set (YAML, command line, launch); unset ones are left out."""
        values = {}
        for parameter in self.parameters:
            try:
                value = self.get_parameter(parameter.name).value
            except ParameterUninitializedException:
                continue
            if value is not None:
                values[parameter.name] = list(value) if parameter.setting.kind is list else value
        return values

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters, load the weights and warm the models up."""
        try:
            values = resolve(self.given_values())
            matcher = Matcher(**matcher_arguments(values))
            self.core = MatcherCore.create(matcher, self.given_values())
            warm_up(matcher)
        except START_FAILURES as error:
            self.get_logger().error(f"cannot configure: {error}")
            self.core = None
            return TransitionCallbackReturn.FAILURE
        self._report_effective_values()
        self.slots = LatestSlots()
        self.worker = threading.Thread(target=self._work, name="superglue_worker", daemon=True)
        self.worker.start()
        self.diagnostics_timer = self.create_timer(values["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(f"configured: {values['mode']} matching with {self.core.matcher.model_name} on "
                               f"{self.core.matcher.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and advertise: matching starts."""
        values = self.core.params
        self.endpoints = {camera: CameraEndpoints(self, camera, values) for camera in self.core.cameras}
        inputs = ", ".join(topic for endpoints in self.endpoints.values() for topic in endpoints.topics)
        outputs = ", ".join(endpoints.matches.topic_name for endpoints in self.endpoints.values())
        self.get_logger().info(f"active: matching {inputs}, publishing on {outputs}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames; frames waiting for the worker are dropped."""
        with self.accept_lock:
            for endpoints in self.endpoints.values():
                endpoints.destroy(self)
            self.endpoints = {}
        self.slots.take(0.0)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker and free the models, and the GPU memory they held."""
        self.stop_worker()
        if self.diagnostics_timer is not None:
            self.destroy_timer(self.diagnostics_timer)
            self.diagnostics_timer = None
        with self.model_lock:
            device = self.core.matcher.device if self.core is not None else None
            self.core = None
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.endpoints:
            self.on_deactivate(state)
        return self.on_cleanup(state)

    def on_image(self, camera: str, side: int, msg: Any) -> None:
        stamp = Stamp.from_header(msg.header)
        topics = self.endpoints[camera].topics if camera in self.endpoints else [""]
        frame = StampedFrame(stamp.nanoseconds, msg, time.monotonic(),
                             stamp.frame_id, topics[min(side, len(topics) - 1)])
        msgtype = COMPRESSED_IMAGE if isinstance(msg, CompressedImage) else RAW_IMAGE
        with self.accept_lock:
            if self.core is None:
                return
            job = self.core.accept(camera, side, frame, msgtype)
            if job is not None and self.slots.put(camera, job):
                self.core.cameras[camera].counters.dropped_busy += 1

    def count_lost(self, camera: str, count: int) -> None:
        with self.accept_lock:
            if self.core is not None and count > 0:
                self.core.cameras[camera].counters.dropped_in_transport += count

    def _work(self) -> None:
        """Match the cameras' pending jobs until the slots close; nothing a frame does may end this loop."""
        while True:
            jobs = self.slots.take(WORKER_POLL_S)
            if self.slots.closed:
                return
            if not jobs:
                continue
            with self.model_lock:
                if self.core is None:
                    continue
                results = self.core.run_batch(jobs)
            for job, (output, problem) in zip(jobs, results):
                if problem:
                    self.get_logger().warning(problem, throttle_duration_sec=WARN_THROTTLE_S)
                if output is not None:
                    self._publish(output)

    def _publish(self, output: Output) -> None:
        endpoints = self.endpoints.get(output.camera)
        if endpoints is None or not rclpy.ok(context=self.context):
            return  # deactivated, or shutting down, since the frame arrived
        try:
            endpoints.matches.publish(fill(Matches(), output.matches))
            endpoints.homography.publish(fill(Homography(), output.homography))
            if endpoints.debug.get_subscription_count() > 0:
                endpoints.debug.publish(image_message(debug_image(output), output.matches["header"]))
        except Exception as error:  # noqa: BLE001 - a failed publish is counted, not fatal
            if rclpy.ok(context=self.context):
                self.core.cameras[output.camera].counters.dropped_error += 1
                self.get_logger().warning(f"publishing failed: {type(error).__name__}: {error}",
                                          throttle_duration_sec=WARN_THROTTLE_S)
            return
        self.core.cameras[output.camera].counters.published += 1

    def _publish_diagnostics(self) -> None:
        core = self.core
        if core is None:
            return
        statuses = []
        for camera in core.cameras:
            level, summary, values = core.diagnostics(camera)
            if not self.endpoints:
                summary = "inactive: not taking frames"
            name = f"{self.get_fully_qualified_name()}: matcher" + (f" {camera}" if camera != SINGLE else "")
            statuses.append(DiagnosticStatus(level=bytes([level]), name=name, message=summary,
                                             hardware_id=str(core.matcher.device),
                                             values=[KeyValue(key=k, value=v) for k, v in values.items()]))
        message = DiagnosticArray(status=statuses)
        message.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(message)

    def _report_effective_values(self) -> None:
        """Model settings left unset take the loaded model's values; the node reports those."""
        updates = []
        for parameter in self.parameters:
            if parameter.default is None and parameter.target in ("extractor", "superglue"):
                value = self.core.effective(parameter.name)
                if value is not None:
                    updates.append(RosParameter(parameter.name, value=value))
        if updates:
            self.set_parameters(updates)

    def _on_set_parameters(self, parameters: list[RosParameter]) -> SetParametersResult:
        """Validate and apply updates one by one; the first bad value rejects the whole set."""
        with self.model_lock:
            core = self.core
            if core is None:
                try:
                    for parameter in parameters:
                        validate(parameter.name, parameter.value)
                except ValueError as error:
                    return SetParametersResult(successful=False, reason=str(error))
                return SetParametersResult(successful=True)
            previous = {name: core.effective(name) for name in core.params}
            try:
                for parameter in parameters:
                    core.update(parameter.name, parameter.value)
            except ValueError as error:
                for parameter in parameters:
                    old = previous.get(parameter.name)
                    if old is not None and core.effective(parameter.name) != old:
                        core.update(parameter.name, old)
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def stop_worker(self) -> None:
        self.slots.close()
        if self.worker is not None:
            self.worker.join(timeout=10.0)
            self.worker = None


def warm_up(matcher: Matcher) -> None:
    """One small pair through the models, so the first camera frame does not pay for lazy set-up."""
    rng = np.random.default_rng(0)
    image = (rng.random((120, 160)) * 255).astype(np.uint8)
    matcher.match(image, np.roll(image, 4, axis=1))
    matcher.clear_cache()


def descriptor(parameter: Parameter) -> ParameterDescriptor:
    """ROS parameter descriptor with the table's description, range and read-only flag."""
    setting = parameter.setting
    result = ParameterDescriptor(description=setting.description, read_only=parameter.read_only,
                                 type=ROS_TYPES[setting.kind].value)
    if setting.choices:
        result.additional_constraints = f"one of: {setting.range_text}"
    elif setting.kind in (int, float) and setting.low is not None and setting.high is not None and not setting.special:
        result_range = range_of(setting)
        if setting.kind is int:
            result.integer_range = [result_range]
        else:
            result.floating_point_range = [result_range]
    elif setting.range_text:
        result.additional_constraints = setting.range_text
    return result


def range_of(setting: Setting) -> IntegerRange | FloatingPointRange:
    if setting.kind is int:
        return IntegerRange(from_value=int(setting.low), to_value=int(setting.high), step=0)
    return FloatingPointRange(from_value=float(setting.low), to_value=float(setting.high), step=0.0)


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


class Stop(KeyboardInterrupt):
    """SIGTERM (what launch systems, systemd and docker send), handled like Ctrl-C."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def main(args: list[str] | None = None) -> int:
    """Start the node (configured and active unless ``autostart`` is false) and spin until Ctrl-C or
    SIGTERM; the worker is stopped before ROS shuts down, so nothing publishes on a dead context."""
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        node = MatcherNode()
    except Exception as error:  # noqa: BLE001 - a parameter of the wrong type, say: one line, not a traceback
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {type(error).__name__}: {error}")
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous)
        return 2
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("cannot start: configuring failed (the reason is above)")
                return 2
            node.trigger_activate()
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok():  # short waits, so that Ctrl-C and SIGTERM are handled promptly in any state
            executor.spin_once(timeout_sec=SPIN_POLL_S)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.stop_worker()
        node.destroy_node()
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous)
    return 0
