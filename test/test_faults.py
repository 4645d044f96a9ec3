"""Faults and hostile input, round two: outputs that would destroy an input or a special file, signals, memory
bounds on every image reader, files that block, and options that used to end in a traceback. Each case is one
error line and exit code 2 (or a counted skip), before the work, and every input is byte for byte what it was.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from superglue_ros.cli.main import main
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
