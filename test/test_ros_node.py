"""The matcher node for real: rclpy, DDS on loopback, the colcon-built messages.

Each test starts the node in its own process (as `ros2 run` would) and a fake
camera process that publishes frames and records what the node publishes.
Needs the ROS 2 build made by `.ci/ros_build.sh` (PyPI wheels + colcon) and
skips with that reason when it is absent.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from conftest import GOLDEN, REPO, require
from superglue_ros.geometry.homography import estimate_homography

PYTHON_DIR = Path("lib") / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def find_install() -> Path:
    """The colcon install of this package: .ci/ros_build.sh's, or the workspace's that `colcon test` runs in."""
    candidates = [REPO / ".ros" / "install" / "superglue_ros"]
    candidates += [Path(prefix) for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if prefix]
    return next((c for c in candidates if (c / PYTHON_DIR / "superglue_ros" / "msg").is_dir()), candidates[0])


INSTALL = find_install()
SITE_PACKAGES = INSTALL / PYTHON_DIR
SYNTHETIC = GOLDEN / "synthetic"
NAMESPACE = "/superglue"
NODE = f"{NAMESPACE}/superglue_matcher"


def skip_or_fail(reason: str) -> None:
    """CI sets SUPERGLUE_ROS_REQUIRE_ROS=1 so that a broken ROS build fails instead of skipping."""
    if os.environ.get("SUPERGLUE_ROS_REQUIRE_ROS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def ros_env() -> dict[str, str]:
    if importlib.util.find_spec("rclpy") is None:
        skip_or_fail("rclpy is not installed (bash .ci/ros_build.sh installs the ROS 2 PyPI wheels)")
    if not (SITE_PACKAGES / "superglue_ros" / "msg").is_dir():
        skip_or_fail(f"no colcon build of the messages in {INSTALL} (run: bash .ci/ros_build.sh)")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE_PACKAGES), env.get("PYTHONPATH")]))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(INSTALL / "lib"), env.get("LD_LIBRARY_PATH")]))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(INSTALL), sys.prefix])
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "test" / "ros" / "fastdds_loopback.xml")
    env["ROS_DOMAIN_ID"] = str(100 + os.getpid() % 100)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    return env


class NodeProcess:
    """The matcher node as a child process, stopped with SIGINT like Ctrl-C."""

    def __init__(self, env: dict[str, str], workdir: Path, params: dict[str, Any], via_cli: bool = False) -> None:
        # The installed entry point runs as a robot's launch file runs it: with the interpreter CMake wrote
        # into its first line, not through `python`, so an unactivated virtual environment must do.
        cli = [sys.executable, "-m", "superglue_ros", "node", "--params-file", str(REPO / "config" / "matcher.yaml")]
        entry = cli if via_cli else [str(INSTALL / "lib" / "superglue_ros" / "matcher_node")]
        args = [*entry, "--ros-args", "-r", f"__ns:={NAMESPACE}"]
        for name, value in params.items():
            text = json.dumps(value) if isinstance(value, (str, list)) else str(value).lower() \
                if isinstance(value, bool) else value
            args += ["-p", f"{name}:={text}"]
        self.log = workdir / "node.log"
        self.process = subprocess.Popen(args, cwd=workdir, env=env, stdout=self.log.open("w"),
                                        stderr=subprocess.STDOUT)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_node(ros_env: dict[str, str], tmp_path: Path) -> Iterator:
    nodes: list[NodeProcess] = []

    def start(via_cli: bool = False, **params: Any) -> NodeProcess:
        nodes.append(NodeProcess(ros_env, tmp_path, params, via_cli))
        return nodes[-1]

    yield start
    for node in nodes:
        node.stop()


def run_camera(env: dict[str, str], workdir: Path, spec: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    spec_path, out_path = workdir / "spec.json", workdir / "out.json"
    spec_path.write_text(json.dumps({"node": NODE, "namespace": NAMESPACE, **spec}))
    done = subprocess.run([sys.executable, str(REPO / "test" / "ros" / "camera.py"), str(spec_path), str(out_path)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out_path.read_text())
    assert result["connected"], "camera and node never discovered each other"
    return result


def frame(workdir: Path, name: str, image: np.ndarray, stamp_ns: int, topic: str = "image",
          encoding: str = "mono8", delay: float = 0.0, **extra: Any) -> dict[str, Any]:
    path = workdir / f"{name}.npy"
    np.save(path, image)
    return {"topic": topic, "file": str(path), "encoding": encoding, "stamp_ns": stamp_ns, "delay": delay, **extra}


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    data = np.load(require(SYNTHETIC / "reference.npz"))
    return {key: data[key] for key in ("image0_u8", "image1_u8", "homography", "matches0")}


@pytest.fixture(scope="module")
def scene() -> dict[str, np.ndarray]:
    """A generated textured frame and a copy shifted by 16 px, for tests that need no reference data."""
    from superglue_ros.bench.speed import textured_image

    image = textured_image(np.random.default_rng(5), 480, 640)
    return {"image0_u8": image, "image1_u8": np.ascontiguousarray(np.roll(image, 16, axis=1))}


@pytest.fixture(scope="module")
def generated_weights(weight_files) -> dict[str, str]:
    return {"superpoint_weights": str(weight_files["superpoint"]), "superglue_weights": str(weight_files["superglue"])}


def golden_weights() -> dict[str, str]:
    return {"superpoint_weights": str(SYNTHETIC / "superpoint.pth"),
            "superglue_weights": str(SYNTHETIC / "superglue.pth")}


def corner_error(h: np.ndarray, h_true: np.ndarray, width: int, height: int) -> float:
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    warp = lambda m: cv2.perspectiveTransform(corners[None], m)[0]  # noqa: E731
    return float(np.linalg.norm(warp(h) - warp(h_true), axis=1).mean())


def test_sequential_pair_is_matched_like_the_reference(ros_env, start_node, tmp_path, golden):
    """A warped pair through the live node: the reference's 137 matches and the known homography."""
    node = start_node(mode="sequential", image_reliability="reliable", **golden_weights())
    stamps = (1_700_000_000_100_000_000, 1_700_000_000_200_000_000)
    frames = [frame(tmp_path, "f0", golden["image0_u8"], stamps[0], delay=0.5, frame_id="cam"),
              frame(tmp_path, "f1", golden["image1_u8"], stamps[1], frame_id="cam")]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "reliability": "reliable"})
    assert len(out["matches"]) == 1, node.output()
    matches, homography = out["matches"][0], out["homography"][0]
    assert matches["header"] == {"stamp": {"sec": 1_700_000_000, "nanosec": 200_000_000}, "frame_id": "cam"}
    assert matches["reference_header"]["stamp"] == {"sec": 1_700_000_000, "nanosec": 100_000_000}
    assert matches["mode"] == 1 and (matches["height"], matches["width"]) == (480, 640)
    assert len(matches["matches"]) // 2 == int((golden["matches0"] >= 0).sum()) == 137
    assert len(matches["confidences"]) == 137
    pairs = np.array(matches["matches"]).reshape(-1, 2)
    assert pairs[:, 0].max() < len(matches["reference_keypoints"]) // 2
    assert pairs[:, 1].max() < len(matches["keypoints"]) // 2
    np.testing.assert_array_equal(pairs[:, 1], golden["matches0"][pairs[:, 0]])
    assert 0 < matches["processing_time"] < 60
    assert homography["valid"] and homography["num_matches"] == 137
    assert homography["header"] == matches["header"]
    points0 = np.array(matches["reference_keypoints"], np.float32).reshape(-1, 2)[pairs[:, 0]]
    points1 = np.array(matches["keypoints"], np.float32).reshape(-1, 2)[pairs[:, 1]]
    local = estimate_homography(points0, points1)
    np.testing.assert_allclose(np.array(homography["h"]).reshape(3, 3), local.h, atol=1e-9)
    assert homography["num_inliers"] == local.num_inliers


def test_fixed_backend_publishes_the_references_matches(ros_env, start_node, tmp_path, golden):
    """The node configured with backend fixed (keypoint slots, matched without a host synchronisation) publishes
    the golden pair's 137 matches, as the exact backend does."""
    node = start_node(mode="sequential", image_reliability="reliable", backend="fixed", **golden_weights())
    frames = [frame(tmp_path, "f0", golden["image0_u8"], 1, delay=0.5), frame(tmp_path, "f1", golden["image1_u8"], 2)]
    # on a CPU the fixed path runs plain convolutions (no oneDNN shortcut), slower than the exact one: more time
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "reliability": "reliable",
                                         "timeout": 240}, timeout=300)
    assert len(out["matches"]) == 1, node.output()
    matches = out["matches"][0]
    pairs = np.array(matches["matches"]).reshape(-1, 2)
    assert len(pairs) == int((golden["matches0"] >= 0).sum()) == 137
    # compared by position: the two backends may order near-tied keypoints differently
    reference = np.load(SYNTHETIC / "reference.npz")
    matched = np.flatnonzero(golden["matches0"] >= 0)
    expected = np.concatenate([reference["keypoints0"][matched], reference["keypoints1"][golden["matches0"][matched]]],
                              axis=1)
    found = np.concatenate([np.array(matches["reference_keypoints"]).reshape(-1, 2)[pairs[:, 0]],
                            np.array(matches["keypoints"]).reshape(-1, 2)[pairs[:, 1]]], axis=1)
    assert {tuple(row) for row in found.tolist()} == {tuple(row) for row in expected.tolist()}
    assert out["homography"][0]["valid"]


def test_known_warp_is_recovered(ros_env, start_node, tmp_path, golden):
    """A shift by whole 8-px cells keeps SuperPoint's output exactly covariant even with random
    weights, so the published homography must be that shift."""
    k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    start_node(mode="keyframe", image_reliability="reliable", camera_matrix=k, **golden_weights())
    shift = np.array([[1, 0, 24], [0, 1, 16], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(golden["image0_u8"], shift, (640, 480))
    frames = [frame(tmp_path, "f0", golden["image0_u8"], 1, delay=0.5), frame(tmp_path, "f1", warped, 2)]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "reliability": "reliable",
                                         "settle": 1.0})
    homography = out["homography"][0]
    assert homography["valid"] and homography["num_inliers"] > 100
    assert corner_error(np.array(homography["h"]).reshape(3, 3), shift, 640, 480) < 0.5
    assert out["matches"][0]["mode"] == 2
    pose = out["relative_pose"][0]  # with camera_matrix set, a relative pose per pair, stamped like the matches
    assert pose["header"] == out["matches"][0]["header"]
    assert pose["reference_header"] == out["matches"][0]["reference_header"]
    assert len(pose["rotation"]) == 9 and len(pose["translation"]) == 3
    assert pose["num_matches"] == homography["num_matches"]
    assert pose["valid"] == (pose["reason"] == "")


def test_messages_on_the_wire_equal_rosbags_serialisation(ros_env, start_node, tmp_path, scene, generated_weights):
    """What rclpy sends is byte for byte what the evaluation tool writes into bags for the same fields;
    with a subscriber on debug_image, the drawn matches come too."""
    from superglue_ros.eval.bagio import typestore_with_package_messages

    start_node(mode="sequential", image_reliability="reliable", max_keypoints=256, match_threshold=0.0,
               **generated_weights)
    frames = [frame(tmp_path, "f0", scene["image0_u8"], 10, delay=0.5),
              frame(tmp_path, "f1", scene["image1_u8"], 20)]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "reliability": "reliable",
                                         "watch_debug_image": True})
    assert out["debug_images"][0] == {"encoding": "bgr8", "height": 480, "width": 2 * 640 + 10,
                                      "bytes": 480 * (2 * 640 + 10) * 3}
    wire = bytes.fromhex(out["matches_cdr"][0])
    typestore = typestore_with_package_messages()
    decoded = typestore.deserialize_cdr(wire, "superglue_ros/msg/Matches")
    assert typestore.serialize_cdr(decoded, "superglue_ros/msg/Matches") == wire
    received = out["matches"][0]
    np.testing.assert_array_equal(decoded.keypoints, np.array(received["keypoints"], np.float32))
    np.testing.assert_array_equal(decoded.matches, np.array(received["matches"], np.uint32))
    assert decoded.model == received["model"] and decoded.weights == received["weights"]
    assert len(received["matches"]) > 0


def test_flood_bad_frames_and_parameter_updates(ros_env, start_node, tmp_path, scene, generated_weights):
    """Drops are counted, bad frames never kill the node, bad parameter values are refused."""
    node = start_node(mode="sequential", image_reliability="reliable", max_keypoints=512,
                      diagnostics_period=0.3, **generated_weights)
    image = scene["image0_u8"]
    frames = [frame(tmp_path, "first", image, 1, delay=0.5),
              frame(tmp_path, "bayer", image, 2, encoding="bayer_rggb8", delay=0.5),
              {"topic": "image", "encoding": "mono8", "stamp_ns": 3, "delay": 0.5},
              frame(tmp_path, "short", image[:10], 4, height=480, delay=0.5)]
    flood = 15
    frames += [frame(tmp_path, f"flood{i}", scene[f"image{i % 2}_u8"], 10 + i, delay=0.02) for i in range(flood)]
    spec = {"frames": frames, "expect_matches": 1, "settle": 6.0, "reliability": "reliable",
            "set_parameters": [["match_threshold", 1.5], ["max_keypoints", 300], ["mode", "stereo"],
                               ["homography_method", "magic"], ["sinkhorn_iterations", 50]]}
    out = run_camera(ros_env, tmp_path, spec, timeout=180)
    outcomes = out["set_parameters"]
    assert not outcomes[0][0] and "match_threshold" in outcomes[0][1] and "1.5" in outcomes[0][1]
    assert outcomes[1] == [True, ""]
    assert not outcomes[2][0]
    assert not outcomes[3][0] and "homography_method" in outcomes[3][1]
    assert outcomes[4] == [True, ""]
    assert node.process.poll() is None, node.output()
    last = out["diagnostics"][-1]
    sent = len(frames)
    assert int(last["received"]) == sent
    assert int(last["dropped_invalid"]) == 3
    assert int(last["dropped_busy"]) >= 1
    assert int(last["published"]) >= 1
    # the counter identity: a frame still in the worker's hands when the last report left is in_flight
    accounted = (int(last["held_as_reference"]) + int(last["published"]) + int(last["dropped_total"])
                 + int(last["in_flight"]))
    assert accounted == sent, last
    assert int(last["held_as_reference"]) >= 1
    assert int(last["dropped_total"]) == sum(int(v) for k, v in last.items()
                                             if k.startswith("dropped_")
                                             and k not in ("dropped_total", "dropped_in_transport"))
    assert "unsupported image encoding 'bayer_rggb8'" in node.output()


def test_stereo_pairs_by_stamp_and_counts_unpaired(ros_env, start_node, tmp_path, scene, generated_weights):
    start_node(mode="stereo", slop=0.01, image_reliability="reliable", max_keypoints=256,
               diagnostics_period=0.3, **generated_weights)
    base = 5_000_000_000
    frames = [frame(tmp_path, "lonely", scene["image1_u8"], base - 900_000_000, topic="right/image",
                    frame_id="right", delay=0.2),
              frame(tmp_path, "left", scene["image0_u8"], base, topic="left/image", frame_id="left", delay=0.2),
              frame(tmp_path, "right", scene["image1_u8"], base + 3_000_000, topic="right/image",
                    frame_id="right")]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "settle": 1.5,
                                         "reliability": "reliable"})
    matches = out["matches"][0]
    assert matches["mode"] == 0
    assert matches["reference_header"]["frame_id"] == "left" and matches["header"]["frame_id"] == "right"
    assert matches["header"]["stamp"]["nanosec"] == 3_000_000
    assert int(out["diagnostics"][-1]["dropped_unpaired"]) == 1


def test_compressed_input_and_corrupt_payload(ros_env, start_node, tmp_path, scene, generated_weights):
    start_node(mode="sequential", input_type="compressed", image_reliability="reliable", max_keypoints=256,
               diagnostics_period=0.3, **generated_weights)
    png = [cv2.imencode(".png", scene[f"image{i}_u8"])[1].tobytes().hex() for i in (0, 1)]
    frames = [{"topic": "image/compressed", "format": "png", "data_hex": png[0], "stamp_ns": 1, "delay": 0.5},
              {"topic": "image/compressed", "format": "png", "data_hex": "00ff00ff", "stamp_ns": 2, "delay": 0.5},
              {"topic": "image/compressed", "format": "png", "data_hex": png[1], "stamp_ns": 3}]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "settle": 1.0,
                                         "reliability": "reliable"})
    assert len(out["matches"]) == 1 and out["matches"][0]["header"]["stamp"]["nanosec"] == 3
    assert int(out["diagnostics"][-1]["dropped_invalid"]) == 1


def test_node_refuses_to_start_without_weights(ros_env, start_node, tmp_path):
    """Started the PyPI-wheel way (`superglue-ros node --params-file`), a missing weight file is one clear error."""
    node = start_node(via_cli=True, weights="indoor", weights_dir=str(tmp_path / "nothing-here"))
    assert node.process.wait(timeout=60) == 2
    assert "cannot start" in node.output() and "superglue-ros weights download" in node.output()


def test_lifecycle_transitions_load_subscribe_stop_and_free(ros_env, start_node, tmp_path, scene, generated_weights):
    """With autostart off the node waits unconfigured; configure and activate start matching, deactivate
    stops it, cleanup frees the models, and every transition reports its state."""
    node = start_node(autostart=False, mode="sequential", image_reliability="reliable", max_keypoints=256,
                      **generated_weights)
    frames = [frame(tmp_path, "f0", scene["image0_u8"], 1, delay=0.5), frame(tmp_path, "f1", scene["image1_u8"], 2)]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "reliability": "reliable",
                                         "lifecycle": ["configure", "activate"],
                                         "lifecycle_after": ["deactivate", "cleanup"]})
    assert out["transitions"] == [[True, "inactive"], [True, "active"], [True, "inactive"], [True, "unconfigured"]]
    assert len(out["matches"]) == 1, node.output()
    assert node.stop() == 0
    assert "Traceback" not in node.output() and "Exception" not in node.output()


def test_oversized_and_broken_frames_never_stop_the_worker(ros_env, start_node, tmp_path, scene, generated_weights):
    """A 20000x20000 PNG (a few hundred KB) and a frame above max_image_pixels are dropped before any large
    allocation and counted; the frames after them are matched as usual."""
    node = start_node(mode="sequential", image_reliability="reliable", max_keypoints=256, max_image_pixels=1_000_000,
                      diagnostics_period=0.3, **generated_weights)
    huge = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8))[1].tobytes().hex()
    frames = [frame(tmp_path, "f0", scene["image0_u8"], 1, delay=0.5),
              {"topic": "image", "format": "png", "data_hex": huge, "stamp_ns": 2, "delay": 0.5},
              frame(tmp_path, "big", np.zeros((1200, 1200), np.uint8), 3, delay=0.5),
              frame(tmp_path, "f1", scene["image1_u8"], 4, delay=0.5),
              frame(tmp_path, "f2", scene["image0_u8"], 5)]
    frames[1]["topic"] = "image/compressed"
    out = run_camera(ros_env, tmp_path, {"frames": frames[:1] + frames[2:], "expect_matches": 2, "settle": 1.0,
                                         "reliability": "reliable"})
    assert len(out["matches"]) == 2, node.output()
    last = out["diagnostics"][-1]
    assert int(last["dropped_invalid"]) == 1 and "above max_image_pixels" in node.output()
    compressed = start_node(mode="sequential", input_type="compressed", image_reliability="reliable",
                            max_keypoints=256, diagnostics_period=0.3, **generated_weights)
    png = [cv2.imencode(".png", scene[f"image{i}_u8"])[1].tobytes().hex() for i in (0, 1)]
    frames = [{"topic": "image/compressed", "format": "png", "data_hex": png[0], "stamp_ns": 1, "delay": 0.5},
              {"topic": "image/compressed", "format": "png", "data_hex": huge, "stamp_ns": 2, "delay": 1.0},
              {"topic": "image/compressed", "format": "png", "data_hex": png[1], "stamp_ns": 3}]
    node.stop()
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "settle": 1.0,
                                         "reliability": "reliable"})
    assert len(out["matches"]) == 1 and out["matches"][0]["header"]["stamp"]["nanosec"] == 3, compressed.output()
    assert int(out["diagnostics"][-1]["dropped_invalid"]) == 1 and "exceeds max_image_pixels" in compressed.output()


def test_cameras_are_matched_in_one_node(ros_env, start_node, tmp_path, scene, generated_weights):
    """`cameras`: each camera on its own namespace, with its own references and counters."""
    start_node(mode="sequential", cameras=["front", "rear"], image_reliability="reliable", max_keypoints=256,
               diagnostics_period=0.3, **generated_weights)
    frames = []
    for stamp, (first, second) in enumerate((("image0_u8", "image1_u8"), ("image1_u8", "image0_u8"))):
        frames += [frame(tmp_path, f"front{stamp}", scene[first], stamp + 1, topic="front/image", delay=0.3),
                   frame(tmp_path, f"rear{stamp}", scene[second], stamp + 1, topic="rear/image", delay=0.3)]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 2, "settle": 1.0,
                                         "reliability": "reliable", "cameras": ["front", "rear"]})
    assert [len(out["matches_by_camera"][c]) for c in ("front", "rear")] == [1, 1]
    names = {d["_name"].rsplit(" ", 1)[-1] for d in out["diagnostics"]}
    assert {"front", "rear"} <= names


def test_best_effort_camera_sized_frames_arrive_and_parameters_report_what_is_used(
        ros_env, start_node, tmp_path, scene, generated_weights):
    """640x480 frames over best-effort QoS (what camera drivers send) are delivered by the test profile; the
    node reports the model's own Sinkhorn iterations, which no parameter set, as what it uses."""
    node = start_node(mode="sequential", max_keypoints=256, diagnostics_period=0.3, **generated_weights)
    frames = [frame(tmp_path, f"f{i}", scene[f"image{i % 2}_u8"], i + 1, delay=0.3) for i in range(6)]
    out = run_camera(ros_env, tmp_path, {"frames": frames, "expect_matches": 1, "settle": 2.0,
                                         "get_parameters": ["sinkhorn_iterations", "match_threshold"]})
    assert int(out["diagnostics"][-1]["received"]) == len(frames), node.output()  # none lost in transport
    assert len(out["matches"]) >= 1
    assert out["parameters"] == {"sinkhorn_iterations": 100, "match_threshold": 0.2}
    assert node.stop() == 0 and node.output().count("Traceback") == 0


def test_every_parameter_has_a_value_and_configure_time_ones_change_while_unconfigured(
        ros_env, start_node, tmp_path):
    """`ros2 param dump` reads every parameter (none unset); model settings hold -1 until configure
    reports the model's values and again after cleanup; configure-time parameters change while
    unconfigured and are refused once configured; a setting the weights' extractor lacks is refused."""
    node = start_node(autostart=False, weights="sift_open", image_reliability="reliable", max_keypoints=256)
    steps = [["dump"], ["set", "nms_radius", 3], ["set", "mode", "keyframe"], ["transition", "configure"],
             ["dump"], ["set", "mode", "stereo"], ["set", "match_threshold", 0.3], ["set", "nms_radius", 3],
             ["transition", "cleanup"], ["dump"], ["set", "mode", "sequential"], ["transition", "configure"],
             ["transition", "activate"]]
    out = run_camera(ros_env, tmp_path, {"frames": [], "steps": steps, "reliability": "reliable"})
    (before, sift_nms, mode, configure, configured, mode_again, threshold, sift_nms_again, cleanup, after,
     mode_back, configure_again, activate) = out["steps"]
    assert all(kind != 0 for kind, _ in before.values()), before
    assert before["cameras"] == [9, []] and before["camera_matrix"] == [8, []]
    assert before["nms_radius"] == [2, -1] and before["match_threshold"] == [3, -1.0]
    assert not sift_nms[0] and "nms_radius does not apply to the SIFT extractor" in sift_nms[1]
    assert mode == [True, ""] and configure == [True, "inactive"]
    assert all(kind != 0 for kind, _ in configured.values())
    assert configured["mode"][1] == "keyframe" and configured["nms_radius"][1] == -1
    assert configured["match_threshold"][1] not in (-1.0, None) and configured["sinkhorn_iterations"][1] > 0
    assert not mode_again[0] and "applies at configure" in mode_again[1]
    assert threshold == [True, ""] and not sift_nms_again[0]
    assert cleanup == [True, "unconfigured"]
    assert after["sinkhorn_iterations"][1] == -1 and after["match_threshold"][1] == 0.3
    assert mode_back == [True, ""] and configure_again == [True, "inactive"] and activate == [True, "active"]
    assert node.stop() == 0 and "Traceback" not in node.output()


@pytest.mark.parametrize("autostart, via_cli, signal_number, status", [
    (True, False, signal.SIGINT, 0), (False, True, signal.SIGTERM, 143), (True, True, signal.SIGINT, 130)])
def test_repeated_signals_end_the_node_quietly(ros_env, start_node, tmp_path, generated_weights, autostart,
                                               via_cli, signal_number, status):
    """Two signals in a row (launch forwards Ctrl-C a second time), active or unconfigured: no traceback, no
    abort; the node's entry point exits 0, `superglue-ros node` 130 after SIGINT and 143 after SIGTERM."""
    node = start_node(via_cli=via_cli, autostart=autostart, max_keypoints=256, **generated_weights)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and node.process.poll() is None and not (
            "active:" in node.output() or "unconfigured:" in node.output()):
        time.sleep(0.2)
    assert node.process.poll() is None, node.output()
    node.process.send_signal(signal_number)
    node.process.send_signal(signal_number)
    assert node.process.wait(timeout=60) == status, node.output()
    assert "Traceback" not in node.output() and "terminate called" not in node.output()


def test_sourcing_the_install_alone_finds_the_venvs_ros_packages(ros_env):
    """The no-system-ROS path: `source .ros/install/setup.bash` must chain the virtual environment's prefix,
    or `ros2 interface show superglue_ros/msg/Matches` cannot find std_msgs."""
    setup = INSTALL.parent / "setup.bash"
    if not setup.is_file():
        skip_or_fail(f"no {setup}: the ROS build is not .ci/ros_build.sh's")
    env = {key: value for key, value in os.environ.items() if key not in ("AMENT_PREFIX_PATH", "PYTHONPATH")}
    script = (f"source {setup} && {sys.executable} -c \"from ament_index_python import get_package_share_directory "
              f"as share; print(share('std_msgs')); print(share('superglue_ros'))\"")
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    std_msgs, ours = done.stdout.split()
    assert Path(std_msgs, "msg", "Header.msg").is_file() and Path(ours, "msg", "RelativePose.msg").is_file()
