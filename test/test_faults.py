"""Faults and hostile input, round two: outputs that would destroy an input or a special file, signals, memory
bounds on every image reader, files that block, and options that used to end in a traceback. Each case is one
error line and exit code 2 (or a counted skip), before the work, and every input is byte for byte what it was.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import resource
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from superglue_ros.bench.speed import load_frames
from superglue_ros.cli.main import main
from superglue_ros.files.headers import encoded_size
from superglue_ros.files.images import ImageReadError, decode_image_bytes, read_image
from superglue_ros.stream.image_codec import ImageDecodeError, decode_compressed
from test_bad_input import FAST, TOPIC, one_line_error, wait_for
from test_bagio import graffiti_frames, write_image_bag

from conftest import REPO


def digest(root: Path) -> dict[str, str]:
    """Every file, link and special file under ``root`` (not followed) and what it holds or points to."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[str(path)] = "folder" if path.is_dir() else "special"
    return found


@pytest.fixture()
def pictures(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    paths = tmp_path / "a.png", tmp_path / "b.png"
    for path in paths:
        cv2.imwrite(str(path), (rng.random((60, 80)) * 255).astype(np.uint8))
    return paths


def test_no_output_replaces_an_input_a_link_or_a_special_file(tmp_path, pictures, capsys):
    """match, train, bench and pairs: an output that is an input, lies in an input folder, is empty, too long,
    a link, a FIFO or a folder is refused before any work; nothing under tmp_path changes."""
    a, b = pictures
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "000.png").write_bytes(a.read_bytes())
    os.symlink("/proc/self/fd/1", tmp_path / "link.json")
    os.mkfifo(tmp_path / "fifo.json")
    before = digest(tmp_path)
    match = ["match", str(a), str(b), "--weights", "sift_open"]
    cases = [
        (match + ["--json", str(a)], "input"),
        (match + ["--viz", str(b)], "input"),
        (match + ["--json", ""], "empty"),
        (match + ["--json", str(tmp_path / "link.json")], "symbolic link"),
        (match + ["--json", str(tmp_path / "fifo.json")], "FIFO"),
        (match + ["--json", str(tmp_path / ("n" * 256) / "x.json")], "longer than 255 bytes"),
        (match + ["--json", str(tmp_path / "x.png"), "--viz", str(tmp_path / "x.png")], "same file"),
        (["train", "--images", str(seq), "--out", str(seq / "000.png")], "input"),
        (["train", "--images", str(seq), "--out", str(seq / "model.pt")], "input"),
        (["train", "--images", str(seq), "--out", ""], "empty"),
        (["train", "--images", str(seq), "--out", str(tmp_path)], "folder"),
        (["bench", "--images", str(seq), "--json", str(seq / "000.png")], "input"),
        (["pairs", "scenes", "--textures", str(seq), "--out", str(seq / "out")], "input"),
        (["eval", str(seq), "--out", ""], "empty"),
    ]
    for command, words in cases:
        one_line_error(capsys, main(command), words)
    assert digest(tmp_path) == before


def test_eval_refuses_a_linked_output_bag_before_any_work(tmp_path, capsys):
    """A matches_bag that is a link to a folder (even a real earlier output) is refused at the start, and the
    earlier run's metrics.json is kept."""
    frames = graffiti_frames(3, (160, 120))
    bag = write_image_bag(tmp_path / "bag", {TOPIC: frames})
    out = tmp_path / "out"
    args = ["eval", str(bag), "--topic", TOPIC, "--out", str(out), "--weights", "sift_open", *FAST]
    assert main(args) == 0
    capsys.readouterr()
    os.rename(out / "matches_bag", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", out / "matches_bag")
    before = digest(tmp_path)
    one_line_error(capsys, main(args), "matches_bag", "symbolic link")
    assert digest(tmp_path) == before
    json.loads((out / "metrics.json").read_text())


def training_images(folder: Path) -> Path:
    folder.mkdir()
    for index, frame in enumerate(graffiti_frames(4, (160, 120))):
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    return folder


TINY_TRAINING = ["--batch", "1", "--keypoints", "48", "--crop", "96", "128", "--layers", "1"]


def test_train_keeps_its_finished_steps_on_sighup(tmp_path):
    """A closed terminal ends training between two steps with every finished step in the checkpoint."""
    import torch

    images = training_images(tmp_path / "seq")
    out = tmp_path / "model.pt"
    process = subprocess.Popen([sys.executable, "-m", "superglue_ros", "train", "--images", str(images), "--out",
                                str(out), "--steps", "1000", "--checkpoint-every", "1000", *TINY_TRAINING],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(process, rb" [1-9]\d*/1000")
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGHUP, stderr.decode()[-2000:]
    checkpoint = torch.load(tmp_path / "model.ckpt.pt", weights_only=True)
    assert 1 <= checkpoint["step"] < 1000 and b"--resume" in stderr
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_train_stops_when_the_loss_diverges_and_writes_no_nan_model(tmp_path, capsys):
    images = training_images(tmp_path / "seq")
    out = tmp_path / "model.pt"
    code = main(["train", "--images", str(images), "--out", str(out), "--steps", "3", "--lr", "1e30",
                 *TINY_TRAINING])
    err = capsys.readouterr().err
    assert code == 2 and "diverged" in err and "Traceback" not in err and not out.exists()
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def limit_file_size(size: int) -> Callable[[], None]:
    """A child process whose files cannot grow past ``size`` bytes: a full disk, as the writes see it."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_a_full_disk_at_the_end_keeps_metrics_json_and_says_so_in_one_line(tmp_path):
    """The output bag (sqlite) and the report no longer fit; metrics.json does: it is published, marked partial,
    the bag is left out, and the run ends with one error line and exit 2."""
    bag = write_image_bag(tmp_path / "bag", {TOPIC: graffiti_frames(30, (160, 120))})
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "superglue_ros", "eval", str(bag), "--topic", TOPIC, "--out",
                             str(out), "--weights", "sift_open", *FAST], cwd=REPO, capture_output=True, text=True,
                            preexec_fn=limit_file_size(100_000), timeout=600)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "cannot write" in lines[0], result.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["partial"] is True
    assert not (out / "matches_bag").exists() and not list(out.glob(".superglue-ros-staging-*"))


def tiff(height: int, width: int, order: str, big: bool, pixels: bytes = b"") -> bytes:
    """An uncompressed 8-bit grey TIFF (classic or BigTIFF, either byte order) with one strip."""
    e = "<" if order == "II" else ">"
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
            (277, 3, 1), (278, 4, height), (279, 4, height * width)]
    count, entry, value = ("Q", 20, "Q") if big else ("H", 12, "I")
    first = 16 if big else 8
    data_at = first + struct.calcsize(e + count) + len(tags) * entry + struct.calcsize(e + value)
    head = (order.encode() + struct.pack(e + "HHHQ", 43, 8, 0, first) if big
            else order.encode() + struct.pack(e + "HI", 42, first))
    ifd = struct.pack(e + count, len(tags))
    for tag, kind, number in tags:
        number = data_at if tag == 273 else number
        field = struct.pack(e + ("H" if kind == 3 else "I"), number).ljust(struct.calcsize(e + value), b"\0")
        ifd += struct.pack(e + "HH" + count[0].replace("H", "I"), tag, kind, 1) + field
    return head + ifd + struct.pack(e + value, 0) + pixels


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from(["II", "MM"]), st.booleans())
def test_tiff_sizes_are_read_from_either_byte_order_and_bigtiff(height, width, order, big):
    data = np.frombuffer(tiff(height, width, order, big, bytes(range(256)) * 7), np.uint8)
    assert encoded_size(data) == (height, width) == cv2.imdecode(data, cv2.IMREAD_UNCHANGED).shape[:2]


FORMATS = [".png", ".jpg", ".webp", ".tiff", ".bmp", ".pgm", ".ppm", ".pfm", ".jp2", ".hdr", ".ras", ".gif",
           ".avif", ".pam"]


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(FORMATS), st.integers(1, 48), st.integers(1, 48), st.booleans())
def test_every_decodable_format_has_its_size_read_from_the_header(suffix, height, width, lossless):
    image = (np.random.default_rng(height * 100 + width).random((height, width, 3)) * 255).astype(np.uint8)
    if suffix in (".pfm", ".hdr"):
        image = image.astype(np.float32)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" and lossless else []
    try:
        ok, encoded = cv2.imencode(suffix, image, params)
    except cv2.error:
        ok = False
    assume(ok and encoded.size)  # some encoders refuse tiny images
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    assert encoded_size(encoded) == decoded.shape[:2] == (height, width)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 254), min_size=1, max_size=5), st.integers(8, 64), st.integers(8, 64))
def test_junk_before_the_jpeg_frame_header_does_not_hide_its_size(junk, height, width):
    """libjpeg skips bytes that are not markers; so does the header scan, finding the size libjpeg decodes."""
    encoded = cv2.imencode(".jpg", np.full((height, width), 90, np.uint8))[1].tobytes()
    sof = encoded.index(b"\xff\xc0")
    damaged = np.frombuffer(encoded[:sof] + bytes(junk) + encoded[sof:], np.uint8)
    decoded = decode_image_bytes(damaged, "image x", max_pixels=64 * 64)
    assert encoded_size(damaged) == decoded.shape[:2] == (height, width)


def huge_headers() -> dict[str, bytes]:
    """A few hundred bytes each, claiming images of hundreds of megapixels: decoding any would cost GBs."""
    jpeg = bytearray(cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 14000, 14000)
    lossless = (16383 - 1) | (16383 - 1) << 14
    return {
        "junk before SOF": bytes(jpeg[:sof]) + b"\x00" + bytes(jpeg[sof:]),
        "deflate TIFF": tiff(30000, 30000, "II", False),
        "BigTIFF": tiff(30000, 30000, "MM", True),
        "lossless WebP": b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8L" + struct.pack("<I", 10) + b"\x2f"
                         + struct.pack("<I", lossless) + b"\0" * 8,
        "BMP": b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, 20000, -20000) + b"\0" * 40,
        "PGM": b"P5\n# a comment\n20000 20000\n255\n",
        "Sun raster": b"\x59\xa6\x6a\x95" + struct.pack(">II", 20000, 20000) + b"\0" * 24,
    }


@pytest.mark.parametrize("name", list(huge_headers()))
def test_images_above_the_bound_are_refused_from_the_header_of_any_format(name, tmp_path, capsys):
    path = tmp_path / "huge.img"
    path.write_bytes(huge_headers()[name])
    with pytest.raises(ImageReadError, match="exceeds max_image_pixels") as refused:
        read_image(path, 1000)
    assert refused.value.reason == "too large"


def test_readers_without_a_matcher_have_a_pixel_bound_and_resize_is_checked(tmp_path, pictures, capsys):
    """Textures and training images are bounded too; --resize is checked the same way by every command."""
    a, b = pictures
    textures = tmp_path / "textures"
    textures.mkdir()
    (textures / "huge.tif").write_bytes(huge_headers()["deflate TIFF"])
    cases = [
        (["pairs", "scenes", "--textures", str(textures), "--out", str(tmp_path / "p"), "--count", "1"], "exceeds"),
        (["train", "--images", str(textures), "--out", str(tmp_path / "m.pt"), "--steps", "1"], "exceeds"),
        (["match", str(a), str(b), "--resize", "16384", "16384"], "--max-image-pixels"),
        (["match", str(a), str(b), "--resize", "0"], "--resize"),
        (["bench", "--images", str(textures), "--resize", "0", "0"], "--resize"),
        (["bench", "--images", str(textures), "--resize", "40000"], "--resize"),
        (["eval", str(a), "--images", str(tmp_path), "--resize", "100000"], "--resize"),
        (["eval", str(a), "--images", str(tmp_path), "--resize", "-1", "5"], "--resize"),
    ]
    for command, words in cases:
        one_line_error(capsys, main(command + ["--weights", "sift_open"] * (command[0] not in ("pairs", "train"))),
                       words)
    assert not (tmp_path / "p").exists() and not (tmp_path / "m.pt").exists()


def test_bench_makes_its_frames_on_demand():
    """200000 pairs: no frame exists until asked for, and only a few are held at once."""
    frames = load_frames(None, 400_005, (64, 48))
    assert len(frames) == 400_005 and not frames.recent
    assert np.array_equal(frames[399_999], load_frames(None, 400_005, (64, 48))[399_999])
    for index in range(20):
        assert frames[index].shape == (48, 64)
    assert len(frames.recent) <= 8


def test_a_float_image_without_finite_pixels_is_refused_by_files_and_the_node_core():
    encoded = cv2.imencode(".pfm", np.full((8, 8, 3), np.nan, np.float32))[1]
    with pytest.raises(ImageReadError, match="no finite pixel") as refused:
        decode_image_bytes(encoded, "image x")
    assert refused.value.reason == "no finite pixels"
    with pytest.raises(ImageDecodeError, match="no finite pixels") as refused:  # the node core's frames
        decode_compressed(encoded, "pfm", "/cam", max_pixels=1000)
    assert refused.value.reason == "no finite pixels"


def test_what_used_to_end_in_a_traceback_is_one_line_before_the_work(tmp_path, pictures, weight_files, capsys,
                                                                     monkeypatch):
    a, b = pictures
    official = ["--superpoint-weights", str(weight_files["superpoint"]), "--superglue-weights",
                str(weight_files["superglue"])]
    os.symlink("/proc/self/mem", tmp_path / "mem.pth")
    os.mkfifo(tmp_path / "fifo.pth")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"step": 1}))
    (tmp_path / "cut.pt").write_bytes(weight_files["superglue"].read_bytes()[:5000])
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "seq").mkdir()
    (tmp_path / "seq" / "000.png").write_bytes(a.read_bytes())
    train = ["train", "--images", str(tmp_path / "seq"), "--out", str(tmp_path / "out" / "m.pt")]
    cases = [
        (["match", str(a), str(b), "--max-keypoints", "9" * 401], "max_keypoints"),
        (["match", str(a), str(b), "--weights", "sift_open", "--max-keypoints", str(10 ** 20)], "max_keypoints"),
        (["eval", str(tmp_path), "--synthetic-homography", "--seed", "-1"], "--seed"),
        (["pairs", "scenes", "--out", str(tmp_path / "p"), "--seed", "-1"], "--seed"),
        (["bench", "--threads", "1000000000"], "--threads"),
        (["match", str(a), str(b), "--weights", "sift_open", "--backend", "onnxruntime"], "backend torch"),
        (["match", str(tmp_path / ("n" * 300 + ".png")), str(b)], "too long"),
        (["match", str(a), str(b), "--superpoint-weights", str(tmp_path / "mem.pth"), "--superglue-weights",
          str(weight_files["superglue"])], "mem.pth"),
        (["match", str(a), str(b), "--superpoint-weights", str(tmp_path / "fifo.pth"), "--superglue-weights",
          str(weight_files["superglue"])], "FIFO"),
        (train + ["--resume", str(tmp_path / "plain.pt")], "never run"),
        (train + ["--resume", str(tmp_path / "cut.pt")], "truncated"),
        (train + ["--resume", str(weight_files["superglue"])], "not a checkpoint"),
        (["export-onnx", "--out", str(tmp_path / "a_file"), *official], "not a folder"),
        (["match", str(a), str(b), "--backend", "onnxruntime", "--onnx-dir", str(tmp_path / "a_file"), *official],
         "not a folder"),
    ]
    for command, words in cases:
        one_line_error(capsys, main(command), words)
    monkeypatch.setenv("SUPERGLUE_ROS_WEIGHTS_DIR", "~nosuchuser/x")
    assert main(["weights", "list"]) == 0 and "~nosuchuser" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() and not (tmp_path / "p").exists()


def test_a_damaged_onnx_export_is_not_taken_for_a_current_one(tmp_path):
    from superglue_ros.inference.backends.onnx_export import read_metadata

    (tmp_path / "superpoint.onnx").write_bytes(b"\x08\x07\x12\x0bnot a model at all")
    assert read_metadata(tmp_path / "superpoint.onnx") == {}


@pytest.mark.parametrize("stdout", ["closed pipe", "full disk"])
def test_a_closed_or_full_stdout_ends_without_a_traceback(stdout):
    target = open(os.devnull if stdout == "closed pipe" else "/dev/full", "wb")
    process = subprocess.Popen([sys.executable, "-m", "superglue_ros", "weights", "list"], cwd=REPO,
                               stdout=subprocess.PIPE if stdout == "closed pipe" else target, stderr=subprocess.PIPE)
    if process.stdout is not None:
        process.stdout.close()  # the reader went away, like `| head -c1` once it has its byte
    stderr = process.stderr.read().decode()
    code = process.wait(timeout=120)
    target.close()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    if stdout == "closed pipe":
        assert code == 128 + signal.SIGPIPE and stderr == ""
    else:
        assert code == 2 and stderr.strip().splitlines() == [
            "superglue-ros: error: cannot write to standard output: No space left on device"]


def minimal_document() -> dict:
    """A valid metrics.json document of one pair, built from the schema's own classes."""
    from superglue_ros.eval.schema import Document, Stats, Summary

    stats = Stats(1, 0, 5.0, 5.0, 5.0, 5.0, 5.0)
    summary = Summary(1, stats, stats, stats, stats, 1.0, {"edges": [], "counts": []}, {"total": stats})
    return Document(False, "now", {"source": "x"}, {"name": "m"}, 1.0, summary, [{"index": 0}]).to_json()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["pairs", "matches.count", "skipped_frames.total", "matches.median", "homography_valid_rate"]),
       st.sampled_from([-5, "12", True, [1], {"a": 1}]))
def test_eval_compare_refuses_documents_with_impossible_numbers(tmp_path_factory, field, value):
    """A real metrics.json with one field replaced by a negative count, a string or another type: one line."""
    from superglue_ros.eval.schema import SchemaError, load

    document = minimal_document()
    valid = tmp_path_factory.mktemp("doc") / "metrics.json"
    valid.write_text(json.dumps(document))
    assert load(valid).summary.pairs == 1  # the document itself is valid: only the replaced field is wrong
    assume(not (field.endswith(("median", "rate")) and value == -5))  # a negative number is a valid median
    target = document["summary"]
    *parents, last = field.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[last] = value
    path = tmp_path_factory.mktemp("doc") / "metrics.json"
    path.write_text(json.dumps(document))
    with pytest.raises(SchemaError, match="malformed eval output"):
        load(path)


def test_frame_counts_come_from_storage_when_the_metadata_has_none(tmp_path):
    from superglue_ros.eval.bagio import open_bag

    bag = write_image_bag(tmp_path / "bag", {TOPIC: graffiti_frames(3, (160, 120))})
    metadata = bag / "metadata.yaml"
    lying = re.sub(r"message_count: \d+", "message_count: 0", metadata.read_text())
    assert lying != metadata.read_text()
    metadata.write_text(lying)
    with open_bag(bag) as opened:
        assert opened.count(TOPIC) == 3


def test_unusable_ground_truth_is_counted_by_reason(tmp_path, weight_files):
    """A NaN pose is left out (its frames then have no pose in tolerance) and a camera that did not move
    cannot score the pose: each pair is counted under its reason, none scored as a failure."""
    from superglue_ros.eval.bagio import open_bag
    from superglue_ros.eval.config import EvalConfig
    from superglue_ros.eval.run import evaluate
    from test_eval import fast_matcher, write_posed_bag

    bag = write_posed_bag(tmp_path / "bag", graffiti_frames(4, (160, 120)), "pose", xs=[0.0, math.nan, 0.1, 0.1])
    with open_bag(bag) as opened:
        outcome = evaluate(opened, EvalConfig(source=str(bag), topic=TOPIC, gt_topic="/gt"),
                           fast_matcher(weight_files), tmp_path / "out", progress=False)
    assert outcome.unscored == {"non-finite poses left out": 1, "no pose within --gt-tolerance": 2,
                                "no translation between the poses": 1}
    assert "no translation between the poses 1" in outcome.unscored_text()


def test_nothing_blocks_on_a_fifo_where_a_file_is_expected(tmp_path, pictures):
    """A FIFO as the pair list, as an image, or named report.html in --out: refused at once, in one line."""
    a, b = pictures
    seq = tmp_path / "seq"
    seq.mkdir()
    for path in (a, b):
        (seq / path.name).write_bytes(path.read_bytes())
    os.mkfifo(tmp_path / "pairs.txt")
    os.mkfifo(tmp_path / "fifo.png")
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "report.html")
    commands = [["eval", str(tmp_path / "pairs.txt"), "--images", str(tmp_path)],
                ["match", str(a), str(tmp_path / "fifo.png")],
                ["eval", str(seq), "--out", str(out)]]
    for command in commands:
        result = subprocess.run([sys.executable, "-m", "superglue_ros", *command, "--weights", "sift_open"],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "FIFO" in lines[0], result.stderr[-2000:]
