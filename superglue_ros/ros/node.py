"""The rclpy matcher node: a managed (lifecycle) node and a thin shell around :mod:`superglue_ros.stream.core`.

configure loads the weights and warms the models up, activate creates the
subscriptions and publishers, deactivate stops taking frames, cleanup frees
the models (and CUDA memory); with ``autostart`` (the default) the node
configures and activates itself, so one launch command starts it.
Configure-time parameters (model, mode, topics) can be set only while the
node is unconfigured; model settings left unset hold -1 until configure
reports the loaded model's values.
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
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..inference.matcher import Matcher
from ..inference.weights import WeightsError
from ..files.outputs import OutputError
from ..parameters import BY_NAME, NODE, Parameter, from_ros, in_scope, resolve, ros_default
from ..settings import Setting
from ..stream.core import SINGLE, Job, MatcherCore, Output, debug_image
from ..stream.image_codec import COMPRESSED_IMAGE, RAW_IMAGE
from ..stream.messages import Stamp
from ..msg import Homography, Matches, RelativePose
from ..stream.pairing import LatestSlots, StampedFrame
from .launch_arguments import NODE_NAME

WORKER_POLL_S = 0.2
SPIN_POLL_S = 0.25
WARN_THROTTLE_S = 5.0
ROS_TYPES = {bool: RosParameter.Type.BOOL, int: RosParameter.Type.INTEGER, float: RosParameter.Type.DOUBLE,
             str: RosParameter.Type.STRING, list: RosParameter.Type.STRING_ARRAY}
WORKER_JOIN_S = 60.0  # a batch being matched when the node stops is finished first
START_FAILURES = (ValueError, WeightsError, OutputError, OSError, RuntimeError, ModuleNotFoundError)


class CameraEndpoints:
    """One camera's subscriptions and publishers (created on activate, destroyed on deactivate)."""

    def __init__(self, node: "MatcherNode", camera: str, values: dict[str, Any]) -> None:
        prefix = f"{camera}/" if camera else ""
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.matches = node.create_publisher(Matches, prefix + "matches", reliable)
        self.homography = node.create_publisher(Homography, prefix + "homography", reliable)
        self.relative_pose = node.create_publisher(RelativePose, prefix + "relative_pose", reliable)
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
        self.camera_info = [node.create_subscription(CameraInfo, prefix + side + "camera_info",
                                                     lambda msg, s=index: node.on_camera_info(camera, s, msg),
                                                     qos_profile_sensor_data)
                            for index, side in enumerate(sides)]

    def destroy(self, node: "MatcherNode") -> None:
        for subscription in self.subscriptions + self.camera_info:
            node.destroy_subscription(subscription)
        for publisher in (self.matches, self.homography, self.relative_pose, self.debug):
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
            self.declare_parameter(parameter.name, ros_type(parameter), descriptor(parameter))
            try:
                self.get_parameter(parameter.name)
            except ParameterUninitializedException:  # not given at start: the table's default (typed, for [])
                self.set_parameters([RosParameter(parameter.name, ros_type(parameter), ros_default(parameter))])
        self.reported: set[str] = set()  # model settings holding the value configure reported, not a user's
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
        """The node parameters' values as the table holds them; model settings nobody set are None."""
        values = {}
        for parameter in self.parameters:
            value = from_ros(parameter, self.get_parameter(parameter.name).value)
            values[parameter.name] = None if parameter.name in self.reported else value
        return values

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters, load the weights (each setting applied once) and warm the models up."""
        try:
            values = resolve(self.given_values())
            core = MatcherCore.load(values)
            warm_up(core.matcher)
        except START_FAILURES as error:
            self.get_logger().error(f"cannot configure: {error} (while unconfigured every parameter can be "
                                    f"set; then configure again)")
            return TransitionCallbackReturn.FAILURE
        self.core = core
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
        for topic in remapped_single_camera_topics(self) if self.core.cameras.keys() != {SINGLE} else ():
            self.get_logger().warning(f"{topic} is remapped, but with `cameras` set the node subscribes to "
                                      f"<camera>/{topic} only: remap those topics instead")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames; frames waiting for a partner or the worker are dropped and counted."""
        with self.accept_lock:
            for endpoints in self.endpoints.values():
                endpoints.destroy(self)
            self.endpoints = {}
            for job in self.slots.take(0.0):
                self.core.discard(job.camera, len(job.frames), "dropped_deactivated")
            self.core.deactivate()
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
        self._set_quietly([RosParameter(name, ros_type(BY_NAME[name]), ros_default(BY_NAME[name]))
                           for name in sorted(self.reported)])  # the next model reports its own
        self.reported = set()
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
            replaced = self.slots.put(camera, job) if job is not None else None
            if replaced is not None:
                self.core.discard(camera, len(replaced.frames), "dropped_busy")

    def on_camera_info(self, camera: str, side: int, msg: CameraInfo) -> None:
        """A calibrated camera's K (an uncalibrated one sends zeros) for its relative pose."""
        if msg.k[0] > 0 and msg.k[4] > 0:
            with self.accept_lock:
                if self.core is not None:
                    self.core.set_intrinsics(camera, side, np.array(msg.k))

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
            self._settle(output, "dropped_deactivated")  # deactivated, or shutting down, since the frame arrived
            return
        try:
            endpoints.matches.publish(fill(Matches(), output.matches))
            endpoints.homography.publish(fill(Homography(), output.homography))
            if output.relative_pose is not None:
                endpoints.relative_pose.publish(fill(RelativePose(), output.relative_pose))
            if endpoints.debug.get_subscription_count() > 0:
                endpoints.debug.publish(image_message(debug_image(output), output.matches["header"]))
        except Exception as error:  # noqa: BLE001 - a failed publish is counted, not fatal
            problem = f"publishing failed: {type(error).__name__}: {error}"
            self._settle(output, "dropped_error", problem)
            if rclpy.ok(context=self.context):
                self.get_logger().warning(problem, throttle_duration_sec=WARN_THROTTLE_S)
            return
        self._settle(output, "published")

    def _settle(self, output: Output, outcome: str, problem: str = "") -> None:
        """Count the frames of a matched job: published, or dropped for ``outcome``."""
        with self.accept_lock:
            if self.core is None:
                return
            if outcome == "published":
                self.core.published(output)
            else:
                self.core.discard(output.camera, output.frames, outcome, problem)

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
        """Model settings left unset take the loaded model's values; the node reports those (a setting the
        model does not have keeps -1)."""
        updates = []
        for parameter in self.parameters:
            if self.core.params[parameter.name] is None and parameter.target in ("extractor", "superglue"):
                value = self.core.effective(parameter.name)
                if value is not None:
                    updates.append(RosParameter(parameter.name, ros_type(parameter), value))
        self._set_quietly(updates)
        self.reported = {update.name for update in updates}

    def _set_quietly(self, updates: list[RosParameter]) -> None:
        """Set parameter values as the node's own report: the users' set-parameters check is not asked."""
        if not updates:
            return
        self.remove_on_set_parameters_callback(self._on_set_parameters)
        try:
            self.set_parameters(updates)
        finally:
            self.add_on_set_parameters_callback(self._on_set_parameters)

    def _on_set_parameters(self, parameters: list[RosParameter]) -> SetParametersResult:
        """A user's update: unconfigured, any parameter may change (checked alone and with the others);
        configured, run-time ones apply at once and configure-time ones are refused with the reason.
        The first bad value rejects the whole set."""
        try:
            changes = {p.name: from_ros(BY_NAME[p.name], p.value) for p in parameters}
        except KeyError as error:
            return SetParametersResult(successful=False, reason=f"unknown parameter {error}")
        with self.model_lock:
            core = self.core
            try:
                if core is None:
                    resolve({**self.given_values(), **changes})
                else:
                    apply_updates(core, changes)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=str(error))
            self.reported -= set(changes)
        return SetParametersResult(successful=True)

    def stop_worker(self) -> None:
        self.slots.close()
        if self.worker is not None:
            self.worker.join(timeout=WORKER_JOIN_S)
            self.worker = None


def apply_updates(core: MatcherCore, changes: dict[str, Any]) -> None:
    """Apply run-time changes to a configured core, all or none (ValueError, old values restored)."""
    previous = {name: core.effective(name) for name in changes}
    try:
        for name, value in changes.items():
            core.update(name, value)
    except ValueError:
        for name, old in previous.items():
            if old is not None and core.effective(name) != old:
                core.update(name, old)
        raise


def remapped_single_camera_topics(node: MatcherNode) -> list[str]:
    """The single-camera topics (``image``, ``left/image`` ...) that a remapping rule points elsewhere."""
    namespace = node.get_namespace().rstrip("/")
    return [topic for topic in ("image", "left/image", "right/image", "image/compressed")
            if node.resolve_topic_name(topic) != f"{namespace}/{topic}"]


def ros_type(parameter: Parameter) -> RosParameter.Type:
    if parameter.setting.kind is list and parameter.items is float:
        return RosParameter.Type.DOUBLE_ARRAY
    return ROS_TYPES[parameter.setting.kind]


def warm_up(matcher: Matcher) -> None:
    """One small pair through the models, so the first camera frame does not pay for lazy set-up."""
    rng = np.random.default_rng(0)
    image = (rng.random((120, 160)) * 255).astype(np.uint8)
    matcher.match(image, np.roll(image, 4, axis=1))
    matcher.clear_cache()


def descriptor(parameter: Parameter) -> ParameterDescriptor:
    """ROS parameter descriptor with the table's description and range. Configure-time parameters are not
    ROS read-only (that would forbid them even while unconfigured): the node refuses them once configured."""
    setting = parameter.setting
    when = " (configure-time: can be set only while the node is unconfigured)" if parameter.read_only else ""
    description = setting.description + when
    result = ParameterDescriptor(description=description, type=ros_type(parameter).value)
    if setting.choices:
        result.additional_constraints = f"one of: {setting.range_text}"
    elif parameter.default is None:
        result.additional_constraints = (f"{setting.range_text}, or {ros_default(parameter)}: the loaded model's "
                                         f"own value (reported here after configure; stays -1 for a setting the "
                                         f"model does not have)")
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


class Signals:
    """Remembers the first SIGINT or SIGTERM and ignores any after it: stopping is a flag the spin loop
    reads, so no signal (launch forwards Ctrl-C a second time) can interrupt start-up or the clean-up."""

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous = {number: signal.signal(number, self._handle) for number in self.HANDLED}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def main(args: list[str] | None = None, signal_status: bool = False) -> int:
    """Start the node (configured and active unless ``autostart`` is false) and spin until Ctrl-C or
    SIGTERM; the worker is stopped before ROS shuts down, so nothing publishes on a dead context.
    Returns 0, or with ``signal_status`` (the command-line tool) 128 + the signal's number after one."""
    signals = Signals()
    try:
        return serve(args, signals) or (128 + signals.received if signal_status and signals.received else 0)
    finally:
        signals.restore()


def serve(args: list[str] | None, signals: Signals) -> int:
    """0 after a stop, 2 when the node cannot start."""
    rclpy.init(args=args, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    try:
        node = MatcherNode()
    except Exception as error:  # noqa: BLE001 - a parameter of the wrong type, say: one line, not a traceback
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {type(error).__name__}: {error}")
        rclpy.try_shutdown()
        return 2
    try:
        if node.get_parameter("autostart").value and signals.received is None:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("cannot start: configuring failed (the reason is above)")
                return 2
            if signals.received is None:
                node.trigger_activate()
        else:
            node.get_logger().info("unconfigured: waiting for lifecycle transitions (autostart is false)")
        executor = rclpy.executors.SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and signals.received is None:  # short waits: a signal is seen promptly in any state
            executor.spin_once(timeout_sec=SPIN_POLL_S)
    except rclpy.executors.ExternalShutdownException:
        pass
    finally:
        node.stop_worker()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
