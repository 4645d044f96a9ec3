"""Faults and hostile input, round two: outputs that would destroy an input or a special file, signals, memory
bounds on every image reader, files that block, and options that used to end in a traceback. Each case is one
error line and exit code 2 (or a counted skip), before the work, and every input is byte for byte what it was.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from superglue_ros.cli.main import main
from test_bad_input import FAST, TOPIC, one_line_error
from test_bagio import graffiti_frames, write_image_bag


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
