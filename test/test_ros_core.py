"""Node behaviour without ROS: pairing, latest-frame hand-off, keyframes, cameras, counters, parameters."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
import yaml

from superglue_ros.inference.matcher import Matcher
from superglue_ros.parameters import (BY_NAME, DEFAULTS, PARAMETERS, matcher_arguments, render_markdown, render_yaml,
                                      resolve, validate)
from superglue_ros.stream.core import SINGLE, WARN, Job, MatcherCore, debug_image
from superglue_ros.ros.launch_arguments import (declared_arguments, exit_reason, node_parameters,
                                                parameter_overrides, remapping_warnings, remappings)
from superglue_ros.stream.pairing import ApproximateSync, LatestSlots, StampedFrame

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
    return StampedFrame(stamp_ns, message, time.monotonic(), "cam", "/cam/image")


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


def test_latest_slots_keep_each_cameras_newest_and_report_replacements():
    slots: LatestSlots[int] = LatestSlots()
    assert slots.put("front", 1) is None
    assert slots.put("front", 2) == 1
    assert slots.put("rear", 3) is None
    assert slots.take(0.01) == [2, 3]
    assert slots.take(0.01) == []
    got = []
    worker = threading.Thread(target=lambda: got.append(slots.take(5)))
    worker.start()
    slots.put("front", 7)
    worker.join(5)
    assert got == [[7]]
    slots.close()
    assert slots.take(5) == [] and slots.closed


@pytest.fixture(scope="module")
def matcher(weight_files) -> Matcher:
    return Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                   extractor={"max_keypoints": 128})


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur((rng.random((120, 160)) * 255).astype(np.uint8), (0, 0), 1.0)


def feed(core: MatcherCore, stamp: int, image: np.ndarray, camera: str = SINGLE):
    """One frame through the core as the node passes it: accepted, matched, and its output delivered."""
    output, problem = core.run(core.accept(camera, 0, stamped(stamp, FakeImageMessage.of(image)), RAW))
    if output is not None:
        core.published(output)
    return output, problem


def accounted(core: MatcherCore, camera: str = SINGLE) -> int:
    """Frames the counters account for; equal to ``received`` at any moment."""
    counters = core.cameras[camera].counters
    return counters.published + counters.dropped + counters.held_as_reference + core.cameras[camera].in_flight


def test_sequential_mode_matches_each_frame_with_the_previous(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "sequential", "min_matches": 4})
    outputs = [feed(core, i, np.roll(scene, 8 * i, axis=1))[0] for i in range(3)]
    assert outputs[0] is None
    assert outputs[1].matches["reference_header"]["stamp"]["nanosec"] == 0
    assert outputs[2].matches["reference_header"]["stamp"]["nanosec"] == 1
    assert outputs[2].matches["header"]["stamp"]["nanosec"] == 2
    assert outputs[2].matches["mode"] == 1
    assert core.counters.received == 3 and core.counters.dropped == 0
    assert debug_image(outputs[2]).shape == (120, 2 * 160 + 10, 3)


def test_sequential_mode_restarts_after_a_pause_longer_than_max_reference_age(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "sequential", "max_reference_age": 2.0})
    assert feed(core, 0, scene)[0] is None
    assert feed(core, 1_000_000_000, scene)[0] is not None
    assert feed(core, 21_000_000_000, scene)[0] is None  # 20 s later: a new reference, not a stale match
    assert core.counters.reference_expired == 1
    output, _ = feed(core, 22_000_000_000, scene)
    assert output.matches["reference_header"]["stamp"]["sec"] == 21
    assert core.counters.held_as_reference == 2 and accounted(core) == core.counters.received == 4


def test_keyframe_mode_also_replaces_a_keyframe_older_than_max_reference_age(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "keyframe", "max_reference_age": 2.0, "keyframe_min_matches": 0,
                                        "keyframe_min_inlier_ratio": 0.0, "match_threshold": 0.0})
    feed(core, 0, scene)
    assert feed(core, 1_000_000_000, scene)[0] is not None
    assert feed(core, 30_000_000_000, scene)[0] is None
    assert core.counters.reference_expired == 1
    assert feed(core, 31_000_000_000, scene)[0].matches["reference_header"]["stamp"]["sec"] == 30


@pytest.mark.parametrize("mode", ["sequential", "keyframe", "stereo"])
def test_every_received_frame_is_counted_once_in_every_mode_and_across_deactivate(matcher, scene, mode):
    """received = published + dropped_* + held_as_reference + in_flight, counted in frames (a stereo
    pair is two), per camera: after matching, busy replacements, bad frames, unpaired frames, a failed
    publish and a deactivation with frames waiting in the hand-off, in the pairing and being matched."""
    core = MatcherCore.create(matcher, {"mode": mode, "slop": 0.001, "max_reference_age": 0.0,
                                        "cameras": ["front", "rear"]})
    slots = LatestSlots()
    good, bad = FakeImageMessage.of(scene), FakeImageMessage.of(scene, "bayer_rggb8")

    def arrive(camera, side, stamp, message=good):
        job = core.accept(camera, side, stamped(stamp, message), RAW)
        replaced = slots.put(camera, job) if job is not None else None
        if replaced is not None:
            core.discard(camera, len(replaced.frames), "dropped_busy")

    def work(deliver=True):
        for output, _ in core.run_batch(slots.take(0.0)):
            if output is not None:
                core.published(output) if deliver else core.discard(output.camera, output.frames, "dropped_error")

    sides = (0, 1) if mode == "stereo" else (0, 0)
    for stamp in range(1, 4):
        for side in sides:
            arrive("front", side, stamp * 10**9)
        work()
    for side in sides:  # two jobs for one slot: the first is replaced
        arrive("front", side, 5 * 10**9)
    for side in sides:
        arrive("front", side, 6 * 10**9)
    work(deliver=False)
    for side in sides:
        arrive("front", side, 7 * 10**9, bad)
    work()
    if mode == "stereo":
        arrive("front", 0, 8 * 10**9)  # never gets a partner before the next pair
        arrive("front", 0, 9 * 10**9)
        arrive("front", 1, 9 * 10**9)
        work()
    arrive("rear", 0, 10**9)
    for side in sides:
        arrive("front", side, 11 * 10**9)
    if mode == "stereo":
        arrive("front", 1, 12 * 10**9)  # waits for a partner when the node is deactivated
    for job in slots.take(0.0):  # deactivate: what the hand-off holds is dropped ...
        core.discard(job.camera, len(job.frames), "dropped_deactivated")
    core.deactivate()  # ... and so is what waits for a partner
    for camera in ("front", "rear"):
        counters = core.cameras[camera].counters
        assert core.cameras[camera].in_flight == 0
        assert counters.received == accounted(core, camera), (camera, counters)
    front = core.cameras["front"].counters
    assert front.published >= 2 and front.dropped_busy and front.dropped_invalid and front.dropped_error
    assert front.dropped_deactivated == (3 if mode == "stereo" else 1)
    assert front.held_as_reference == (0 if mode == "stereo" else 1)
    assert front.dropped_unpaired == (1 if mode == "stereo" else 0)


def test_latency_is_reported_per_camera(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "sequential", "cameras": ["front", "rear"]})
    for stamp in range(3):
        feed(core, stamp, scene, "front")
    assert len(core.cameras["front"].latencies) == 2 and not core.cameras["rear"].latencies
    assert "latency_median_s" in core.diagnostics("front")[2]
    assert "latency_median_s" not in core.diagnostics("rear")[2]


def test_relative_pose_with_known_intrinsics(matcher):
    """A textured plane seen by a camera that moved sideways: a unit translation and a rotation; without
    intrinsics there is no pose, and too few matches give an invalid pose with the reason."""
    k = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    rng = np.random.default_rng(7)
    world = cv2.GaussianBlur((rng.random((480, 640)) * 255).astype(np.uint8), (0, 0), 1.2)
    views = []
    for x in (0.0, 0.08):  # plane at depth 1, tilted so that the scene is not one plane facing the camera
        n, d = np.array([0.3, 0.0, 1.0]) / np.linalg.norm([0.3, 0.0, 1.0]), 1.0
        t = np.array([-x, 0.0, 0.0])
        h = k @ (np.eye(3) + np.outer(t, n) / d) @ np.linalg.inv(k)
        views.append(cv2.warpPerspective(world, h @ np.array([[1, 0, -160], [0, 1, -120], [0, 0, 1.0]]),
                                         (320, 240)))
    core = MatcherCore.create(matcher, {"mode": "sequential", "match_threshold": 0.0})
    feed(core, 0, views[0])
    assert feed(core, 1, views[1])[0].relative_pose is None
    core.update("camera_matrix", list(k.ravel()))
    pose = feed(core, 2, views[1])[0].relative_pose
    assert pose["header"]["stamp"]["nanosec"] == 2 and pose["reference_header"]["stamp"]["nanosec"] == 1
    core.set_intrinsics(SINGLE, 0, k)
    output, _ = feed(core, 3, views[0])
    pose = output.relative_pose
    assert pose["valid"] and pose["reason"] == "" and pose["num_inliers"] >= 5, pose["reason"]
    assert pose["num_matches"] == len(output.pair.matched_points()[0])
    assert abs(np.linalg.norm(pose["translation"]) - 1.0) < 1e-9
    rotation = pose["rotation"].reshape(3, 3)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    blank = MatcherCore.create(matcher, {"mode": "sequential", "camera_matrix": list(k.ravel())})
    feed(blank, 0, np.zeros((240, 320), np.uint8))
    pose = feed(blank, 1, np.zeros((240, 320), np.uint8))[0].relative_pose
    assert not pose["valid"] and pose["reason"] and not pose["translation"].any()


def test_keyframe_is_kept_while_tracking_holds_and_replaced_when_it_degrades(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "keyframe", "keyframe_min_matches": 0, "match_threshold": 0.0,
                                        "keyframe_min_inlier_ratio": 0.0, "min_matches": 4})
    feed(core, 0, scene)
    for stamp in (1, 2):
        output, _ = feed(core, stamp, scene)
        assert output.matches["reference_header"]["stamp"]["nanosec"] == 0 and output.matches["mode"] == 2
    core.update("keyframe_min_matches", 100000)
    output, _ = feed(core, 3, scene)
    assert output.matches["reference_header"]["stamp"]["nanosec"] == 0 and core.counters.keyframe_changes == 1
    output, _ = feed(core, 4, scene)
    assert output.matches["reference_header"]["stamp"]["nanosec"] == 3


def test_bad_frames_are_counted_not_raised(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "sequential", "max_image_pixels": 100_000})
    bad = [FakeImageMessage.of(scene, "bayer_rggb8"), FakeImageMessage(b"", 0, 0),
           FakeImageMessage(b"\x00" * 10, 120, 160, "mono8", 160), FakeImageMessage(b"", -5, 160, "mono8", 160),
           FakeImageMessage(b"", 10000, 10000, "mono8", 10000)]  # 100 MP, refused before any copy
    problems = [core.run(Job(SINGLE, (stamped(i, message),), RAW))[1] for i, message in enumerate(bad)]
    assert "unsupported image encoding 'bayer_rggb8' on /cam/image" in problems[0]
    assert "above max_image_pixels" in problems[4]
    assert all(problems) and core.counters.dropped_invalid == 5
    level, summary, values = core.diagnostics(SINGLE)
    assert level == WARN and "dropped frames" in summary and values["dropped_invalid"] == "5"
    assert core.diagnostics(SINGLE)[0] != WARN  # only drops since the last report raise the level


def test_a_failing_model_is_counted_and_the_next_frame_is_matched(matcher, scene, monkeypatch):
    core = MatcherCore.create(matcher, {"mode": "sequential"})
    feed(core, 0, scene)
    original = matcher.superglue.match

    def broken(*args, **kwargs):
        raise MemoryError("out of memory in a kernel")

    monkeypatch.setattr(matcher.superglue, "match", broken)
    output, problem = feed(core, 1, scene)
    assert output is None and "MemoryError" in problem and core.counters.dropped_error == 1
    monkeypatch.setattr(matcher.superglue, "match", original)
    assert feed(core, 2, scene)[0] is not None


def test_stereo_rejects_mismatched_sizes(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "stereo"})
    job = Job(SINGLE, (stamped(0, FakeImageMessage.of(scene)), stamped(0, FakeImageMessage.of(scene[:64]))), RAW)
    output, problem = core.run(job)
    assert output is None and "differ in size" in problem
    pair = (stamped(0, FakeImageMessage.of(scene)), stamped(1, FakeImageMessage.of(scene)))
    output, problem = core.run(Job(SINGLE, pair, RAW))
    assert problem == "" and output.matches["mode"] == 0


def test_stereo_diagnostics_warn_when_many_frames_find_no_partner(matcher, scene):
    core = MatcherCore.create(matcher, {"mode": "stereo", "slop": 0.001, "sync_queue_size": 1})
    for i in range(10):
        core.accept(SINGLE, 0, stamped(i * 10**9, FakeImageMessage.of(scene)), RAW)
    level, summary, values = core.diagnostics(SINGLE)
    assert level == WARN and "without a partner" in summary and int(values["dropped_unpaired"]) == 9


def test_cameras_keep_their_own_references_and_match_as_one_batch(matcher, scene):
    """Two cameras' pairs in one batch give exactly what each gets matched alone."""
    shifted = [np.roll(scene, 8 * i, axis=1) for i in range(3)]
    alone = {}
    for camera, images in (("front", shifted), ("rear", shifted[::-1])):
        core = MatcherCore.create(matcher, {"mode": "sequential"})
        feed(core, 0, images[0])
        alone[camera] = feed(core, 1, images[1])[0]
    core = MatcherCore.create(matcher, {"mode": "sequential", "cameras": ["front", "rear"]})
    jobs = [core.accept(camera, 0, stamped(0, FakeImageMessage.of(images[0])), RAW)
            for camera, images in (("front", shifted), ("rear", shifted[::-1]))]
    assert [output for output, _ in core.run_batch(jobs)] == [None, None]
    jobs = [core.accept(camera, 0, stamped(1, FakeImageMessage.of(images[1])), RAW)
            for camera, images in (("front", shifted), ("rear", shifted[::-1]))]
    batched = {output.camera: output for output, _ in core.run_batch(jobs)}
    for camera in ("front", "rear"):
        assert np.array_equal(batched[camera].matches["matches"], alone[camera].matches["matches"])
        assert np.array_equal(batched[camera].matches["keypoints"], alone[camera].matches["keypoints"])
        assert core.cameras[camera].counters.received == 2
    assert core.diagnostics("front")[2]["received"] == "2"


def test_runtime_updates_reach_the_models_and_bad_values_keep_the_old(matcher):
    core = MatcherCore.create(matcher, {})
    core.update("max_keypoints", 64)
    core.update("match_threshold", 0.5)
    assert matcher.extractor.config["max_keypoints"] == 64 and matcher.superglue.config["match_threshold"] == 0.5
    with pytest.raises(ValueError, match=r"match_threshold must be a number in \[0.0, 1.0\]"):
        core.update("match_threshold", 3.0)
    assert core.effective("match_threshold") == 0.5
    with pytest.raises(ValueError, match="max_keypoints must be -1 or an integer"):
        core.update("max_keypoints", 0)
    core.update("slop", 1)
    assert core.cameras[SINGLE].sync.slop_ns == 1_000_000_000 and core.params["slop"] == 1.0
    with pytest.raises(ValueError, match="weights applies at configure: deactivate and clean up the node"):
        core.update("weights", "outdoor")
    with pytest.raises(ValueError, match="the model's own value"):
        core.update("match_threshold", None)


def test_a_setting_that_does_not_apply_to_the_weights_front_end_is_refused_before_loading(tmp_path):
    """Decided from `weights` alone (nothing loaded): SIFT models have no NMS radius, the official weights
    have no SIFT contrast threshold; a model file is checked once loaded."""
    with pytest.raises(ValueError, match="nms_radius does not apply to the SIFT extractor of weights 'sift_open'"):
        resolve({"weights": "sift_open", "nms_radius": 3})
    assert resolve({"weights": "indoor", "nms_radius": 3})["nms_radius"] == 3
    assert resolve({"weights": "sift_open", "nms_radius": None})["nms_radius"] is None
    with pytest.raises(ValueError, match="does not apply to the SIFT"):
        resolve({"weights": "auto", "weights_dir": str(tmp_path), "keypoint_threshold": 0.01})
    assert resolve({"weights": str(tmp_path / "model.pt"), "nms_radius": 3})["nms_radius"] == 3
    with pytest.raises(ValueError, match="keypoint_threshold does not apply to the XFEAT extractor of weights "
                       "'xfeat_open'"):
        resolve({"weights": "xfeat_open", "keypoint_threshold": 0.01})
    assert resolve({"weights": "xfeat_open", "nms_radius": 3})["nms_radius"] == 3  # XFeat has one too


def test_resize_width_without_resize_height_is_refused():
    for given in ({"resize_width": 640}, {"resize_height": 480}):
        with pytest.raises(ValueError, match="resize_width and resize_height go together"):
            resolve(given)
    assert matcher_arguments(resolve({"resize_width": 640, "resize_height": 480}))["resize"] == (640, 480)


def test_the_library_matcher_keeps_the_same_keypoint_budget_as_the_node(weight_files):
    matcher = Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"])
    assert matcher.extractor.config["max_keypoints"] == DEFAULTS["max_keypoints"] == 1024


def test_camera_matrix_must_be_a_3x3_intrinsics_matrix():
    assert validate("camera_matrix", []) == []
    assert validate("camera_matrix", [500, 0, 320, 0, 500, 240, 0, 0, 1])[0] == 500.0
    for bad in ([1.0] * 8, [0, 0, 320, 0, 500, 240, 0, 0, 1], [500, 0, 320, 0, 500, 240, 0, 1, 1], ["a"] * 9):
        with pytest.raises(ValueError, match="camera_matrix must be"):
            validate("camera_matrix", bad)


def test_sift_models_refuse_superpoint_settings_and_report_their_own_values(monkeypatch, tmp_path):
    monkeypatch.setenv("SUPERGLUE_ROS_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    values = resolve({"weights": "sift_open"})
    core = MatcherCore.create(Matcher(**matcher_arguments(values)), {"weights": "sift_open"})
    model = core.matcher.superglue.config
    assert core.effective("match_threshold") == model["match_threshold"] != BY_NAME["match_threshold"].default
    assert core.effective("nms_radius") is None  # SIFT has no NMS radius
    for name, value in (("nms_radius", 3), ("keypoint_threshold", 0.01)):
        with pytest.raises(ValueError, match=f"{name} does not apply to the SIFT extractor"):
            core.update(name, value)
    core.update("max_keypoints", -1)  # no limit
    assert core.matcher.extractor.config["max_keypoints"] == -1
    core.update("max_keypoints", 2048)  # beyond the budget the detector was made with: it is made again
    assert core.matcher.extractor._sift.getNFeatures() == 4096


@pytest.mark.parametrize("name, value, words", [
    ("mode", "mono", "mode must be one of"), ("max_keypoints", -2, "-1 or an integer in [1, 268435456]"),
    ("reprojection_threshold", "3", "a number"), ("reprojection_threshold", float("nan"), "a number"),
    ("weights_dir", 3, "string"), ("nope", 1, "unknown"), ("cameras", ["front", "1x"], "not a valid ROS name"),
    ("cameras", ["a", "a"], "twice")])
def test_parameter_validation_names_the_parameter_and_range(name, value, words):
    with pytest.raises(ValueError) as error:
        validate(name, value)
    assert words in str(error.value)


def test_every_default_is_valid_and_documented():
    assert resolve({}) == DEFAULTS
    for parameter in PARAMETERS:
        assert parameter.setting.description
        validate(parameter.name, parameter.default)


def test_model_settings_are_declared_once_by_the_models():
    from superglue_ros.models import superglue, superpoint

    for name, model in (("nms_radius", superpoint), ("sinkhorn_iterations", superglue)):
        declared = next(s for s in model.SETTINGS if s.name == name)
        assert (BY_NAME[name].setting.low, BY_NAME[name].setting.high) == (declared.low, declared.high)


def test_config_file_and_readme_come_from_the_parameter_table():
    assert (REPO / "config" / "matcher.yaml").read_text() == render_yaml()
    assert render_markdown() in (REPO / "README.md").read_text()


def test_the_weights_parameter_names_every_model_the_matcher_loads():
    from superglue_ros.inference.loading import MODEL_CHOICES

    assert all(name in BY_NAME["weights"].setting.description for name in MODEL_CHOICES)


def test_a_yaml_value_survives_a_launch_without_arguments(tmp_path):
    """Launch arguments default to "not given": without any, the node's parameters are the YAML file alone."""
    user = yaml.safe_load((REPO / "config" / "matcher.yaml").read_text())
    user["/**"]["ros__parameters"].update(max_keypoints=300, device="cuda", mode="keyframe")
    params_file = tmp_path / "user.yaml"
    params_file.write_text(yaml.safe_dump(user))
    no_arguments = {name: "" for name in declared_arguments()}
    assert node_parameters(str(params_file), no_arguments) == [str(params_file)]
    assert remappings(no_arguments) == []
    given = {**no_arguments, "max_keypoints": "512", "image": "/cam/image_raw"}
    assert node_parameters(str(params_file), given) == [str(params_file), {"max_keypoints": 512}]
    assert ("image", "/cam/image_raw") in remappings(given)
    with pytest.raises(ValueError, match=r"launch argument max_keypoints:='abc': max_keypoints must be"):
        parameter_overrides({"max_keypoints": "abc"})
    assert parameter_overrides({"autostart": "false", "cameras": "front,rear"}) == {
        "autostart": False, "cameras": ["front", "rear"]}
    for text in ("[front,rear]", "[front, rear]", "['front', 'rear']", ' ["front","rear"] '):
        assert parameter_overrides({"cameras": text}) == {"cameras": ["front", "rear"]}, text
    assert parameter_overrides({"cameras": "[]"}) == {"cameras": []}
    for name in ("image_reliability", "precision", "resize_width", "resize_height"):
        assert name in declared_arguments()


def test_onnxruntime_backend_from_parameters(weight_files, scene, tmp_path):
    """The node's backend parameter: exported graphs are reused from onnx_dir, and the Sinkhorn
    iteration count baked into them cannot be changed at run time."""
    pytest.importorskip("onnxruntime", reason="backend onnxruntime needs the onnx extra: pip install '.[onnx]'")
    given = {"backend": "onnxruntime", "onnx_dir": str(tmp_path), "max_keypoints": 64,
             "superpoint_weights": str(weight_files["superpoint"]),
             "superglue_weights": str(weight_files["superglue"])}
    core = MatcherCore.create(Matcher(**matcher_arguments(resolve(given))), given)
    assert core.matcher.backend == "onnxruntime" and sorted(p.name for p in tmp_path.glob("*.onnx")) == [
        "superglue.onnx", "superpoint.onnx"]
    with pytest.raises(ValueError, match="baked into the ONNX graph"):
        core.update("sinkhorn_iterations", 20)
    core.update("match_threshold", 0.0)
    feed(core, 0, scene)
    output, problem = feed(core, 1, np.roll(scene, 8, axis=1))
    assert problem == "" and output.matches["model"] == "superpoint+superglue"


def test_launch_warns_of_ignored_remappings_and_shuts_down_when_the_node_fails():
    """The launch file's helpers: an `image:=` with `cameras` set says where the node subscribes instead;
    an error exit of the node becomes the launch's shutdown reason, a clean exit does not."""
    assert remapping_warnings({"image": "/cam/image_raw"}, []) == []
    warnings = remapping_warnings({"image": "/cam/image_raw", "left_image": ""}, ["front", "rear"])
    assert len(warnings) == 1 and "image:= is ignored" in warnings[0] and "front/image" in warnings[0]
    assert exit_reason(0) is None and exit_reason(None) is None
    assert "exited with code 2" in exit_reason(2)
    compile((REPO / "launch" / "matcher.launch.py").read_text(), "matcher.launch.py", "exec")
