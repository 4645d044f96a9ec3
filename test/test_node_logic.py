"""Node behaviour without ROS: pairing, latest-frame hand-off, keyframes, counters, parameters."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from superglue_ros.inference.matcher import Matcher
from superglue_ros.ros.core import WARN, Job, MatcherCore, debug_image, matcher_from_parameters
from superglue_ros.ros.pairing import ApproximateSync, LatestSlot, StampedFrame
from superglue_ros.parameters import DEFAULTS, PARAMETERS, render_markdown, render_yaml, resolve, validate

from conftest import REPO

RAW = "sensor_msgs/msg/Image"


@dataclass
class FakeImageMessage:
    """What a camera driver's sensor_msgs/Image carries (the camera is outside the unit)."""

    data: bytes
    height: int
    width: int
    encoding: str = "mono8"
    step: int = 0
    is_bigendian: int = 0
    header: dict = field(default_factory=dict)

    @staticmethod
    def of(image: np.ndarray, encoding: str = "mono8") -> "FakeImageMessage":
        return FakeImageMessage(image.tobytes(), image.shape[0], image.shape[1], encoding, int(image.strides[0]))


def stamped(stamp_ns: int, message=None) -> StampedFrame:
    return StampedFrame(stamp_ns, message, time.monotonic(), "cam")


def test_approximate_sync_pairs_closest_within_slop_and_counts_discards():
    sync = ApproximateSync(slop=0.01, queue_size=3)
    assert sync.add(1, stamped(0)) == (None, 0)
    pair, discarded = sync.add(0, stamped(1_000_000_000))
    assert pair is None and discarded == 0
    pair, discarded = sync.add(1, stamped(1_004_000_000))
    assert [f.stamp_ns for f in pair] == [1_000_000_000, 1_004_000_000]
    assert discarded == 1  # the right frame at t=0 can never pair any more


def test_approximate_sync_bounded_queue():
    sync = ApproximateSync(slop=0.001, queue_size=2)
    discards = [sync.add(0, stamped(i * 1_000_000_000))[1] for i in range(5)]
    assert discards == [0, 0, 1, 1, 1] and len(sync.queues[0]) == 2


def test_latest_slot_keeps_newest_and_reports_replacements():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True
    assert slot.take(0.01) == 2
    assert slot.take(0.01) is None
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5)))
    worker.start()
    slot.put(7)
    worker.join(5)
    assert got == [7]
    slot.close()
    assert slot.take(5) is None


@pytest.fixture(scope="module")
def matcher(weight_files) -> Matcher:
    return Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                   superpoint={"max_keypoints": 128})


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur((rng.random((120, 160)) * 255).astype(np.uint8), (0, 0), 1.0)


def test_sequential_mode_matches_each_frame_with_the_previous(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "sequential", "min_matches": 4})
    frames = [stamped(i, FakeImageMessage.of(np.roll(scene, 8 * i, axis=1))) for i in range(3)]
    outputs = [core.run(core.accept(0, frame, RAW))[0] for frame in frames]
    assert outputs[0] is None
    assert outputs[1].matches["reference_header"]["stamp"]["nanosec"] == 0
    assert outputs[2].matches["reference_header"]["stamp"]["nanosec"] == 1
    assert outputs[2].matches["header"]["stamp"]["nanosec"] == 2
    assert outputs[2].matches["mode"] == 1
    assert core.counters.received == 3 and core.counters.dropped == 0
    assert debug_image(outputs[2]).shape == (120, 2 * 160 + 10, 3)


def test_keyframe_is_kept_while_tracking_holds_and_replaced_when_it_degrades(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "keyframe", "keyframe_min_matches": 0, "match_threshold": 0.0,
                                        "keyframe_min_inlier_ratio": 0.0, "min_matches": 4})
    core.run(core.accept(0, stamped(0, FakeImageMessage.of(scene)), RAW))
    for stamp in (1, 2):
        output, _ = core.run(core.accept(0, stamped(stamp, FakeImageMessage.of(scene)), RAW))
        assert output.matches["reference_header"]["stamp"]["nanosec"] == 0 and output.matches["mode"] == 2
    core.update("keyframe_min_matches", 100000)
    output, _ = core.run(core.accept(0, stamped(3, FakeImageMessage.of(scene)), RAW))
    assert output.matches["reference_header"]["stamp"]["nanosec"] == 0 and core.counters.keyframe_changes == 1
    output, _ = core.run(core.accept(0, stamped(4, FakeImageMessage.of(scene)), RAW))
    assert output.matches["reference_header"]["stamp"]["nanosec"] == 3


def test_bad_frames_are_counted_not_raised(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "sequential"})
    bad = [FakeImageMessage.of(scene, "bayer_rggb8"), FakeImageMessage(b"", 0, 0),
           FakeImageMessage(b"\x00" * 10, 120, 160, "mono8", 160)]
    problems = [core.run(Job((stamped(i, message),), RAW))[1] for i, message in enumerate(bad)]
    assert "unsupported image encoding 'bayer_rggb8'" in problems[0]
    assert all(problems) and core.counters.dropped_invalid == 3
    level, summary, values = core.diagnostics()
    assert level == WARN and "rejected input" in summary and values["dropped_invalid"] == "3"
    assert core.diagnostics()[0] != WARN  # only drops since the last report raise the level


def test_stereo_rejects_mismatched_sizes(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "stereo"})
    job = Job((stamped(0, FakeImageMessage.of(scene)), stamped(0, FakeImageMessage.of(scene[:64]))), RAW)
    output, problem = core.run(job)
    assert output is None and "differ in size" in problem
    output, problem = core.run(Job((stamped(0, FakeImageMessage.of(scene)), stamped(1, FakeImageMessage.of(scene))),
                                   RAW))
    assert problem == "" and output.matches["mode"] == 0


def test_runtime_updates_reach_the_models_and_bad_values_keep_the_old(matcher):
    core = MatcherCore.create(matcher, {})
    core.update("max_keypoints", 64)
    core.update("match_threshold", 0.5)
    assert matcher.extractor.config["max_keypoints"] == 64 and matcher.superglue.config["match_threshold"] == 0.5
    with pytest.raises(ValueError, match=r"match_threshold must be a number in \[0.0, 1.0\]"):
        core.update("match_threshold", 3.0)
    assert core.params["match_threshold"] == 0.5
    core.update("slop", 1)
    assert core.sync.slop_ns == 1_000_000_000 and core.params["slop"] == 1.0


@pytest.mark.parametrize("name, value, words", [
    ("mode", "mono", "mode must be one of"), ("max_keypoints", -2, "[-1, 16384]"),
    ("reprojection_threshold", "3", "a number"), ("weights_dir", 3, "string"), ("nope", 1, "unknown")])
def test_parameter_validation_names_the_parameter_and_range(name, value, words):
    with pytest.raises(ValueError) as error:
        validate(name, value)
    assert words in str(error.value)


def test_every_default_is_valid_and_documented():
    assert resolve({}) == DEFAULTS
    for parameter in PARAMETERS:
        assert parameter.description
        validate(parameter.name, parameter.default)


def test_config_file_and_readme_come_from_the_parameter_table():
    assert (REPO / "config" / "matcher.yaml").read_text() == render_yaml()
    assert render_markdown() in (REPO / "README.md").read_text()


def test_the_weights_parameter_offers_every_model_the_matcher_loads():
    from superglue_ros.inference.matcher import MODEL_CHOICES

    weights = next(p for p in PARAMETERS if p.name == "weights")
    assert tuple(weights.choices) == MODEL_CHOICES


def test_launch_file_declares_the_common_arguments():
    text = Path(REPO / "launch" / "matcher.launch.py").read_text()
    compile(text, "matcher.launch.py", "exec")
    for name in ("mode", "weights", "device", "max_keypoints", "params_file", "image", "left_image", "right_image"):
        assert f'"{name}"' in text
    assert '"config", "matcher.yaml"' in text


def test_onnxruntime_backend_from_parameters(weight_files, scene, tmp_path):
    """The node's backend parameter: exported graphs are reused from onnx_dir, and the Sinkhorn
    iteration count baked into them cannot be changed at run time."""
    values = resolve({"backend": "onnxruntime", "onnx_dir": str(tmp_path), "max_keypoints": 64,
                      "superpoint_weights": str(weight_files["superpoint"]),
                      "superglue_weights": str(weight_files["superglue"])})
    core = MatcherCore.create(matcher_from_parameters(values), values)
    assert core.matcher.backend == "onnxruntime" and sorted(p.name for p in tmp_path.glob("*.onnx")) == [
        "superglue.onnx", "superpoint.onnx"]
    with pytest.raises(ValueError, match="baked into the ONNX graph"):
        core.update("sinkhorn_iterations", 20)
    core.update("match_threshold", 0.0)
    core.run(core.accept(0, stamped(0, FakeImageMessage.of(scene)), RAW))
    output, problem = core.run(core.accept(0, stamped(1, FakeImageMessage.of(np.roll(scene, 8, axis=1))), RAW))
    assert problem == "" and output.matches["model"] == "superpoint+superglue"
