"""The README's examples run as written: its Python blocks, and the quick start's commands after the install.

So that the first thing a new user pastes cannot rot: the Python blocks run
on a CPU without the official weights, and the quick start makes its sample
images and ``matches.png`` in a folder of its own, without sudo or downloads.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def quick_start_commands() -> list[list[str]]:
    """The quick start's commands after the install line, each as an argument list."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in blocks("bash", section)[0].splitlines() if line and "pip install" not in line]
    return [shlex.split(command) for line in lines for command in line.split("&&")]


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs_as_written(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPERGLUE_ROS_WEIGHTS_DIR", str(tmp_path))  # as on a machine without the official weights
    namespace: dict[str, object] = {}
    exec(compile(blocks("python")[index], f"README.md python block {index}", "exec"), namespace)
    if "pair" in namespace:  # the matcher example: the pair of sample images is matched
        assert len(namespace["confidence"]) > 20
    assert list(tmp_path.iterdir()) == []  # it writes nothing


def test_quick_start_makes_matches_png_in_its_own_folder(tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert commands and all(c[0] == ".venv/bin/superglue-ros" for c in commands) and "sudo" not in README
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SUPERGLUE_ROS_WEIGHTS_DIR": str(tmp_path / "no_weights")}
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "superglue_ros", *command[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
    assert "sift_open" in done.stderr and " matches " in done.stdout
    pictures = [p for p in tmp_path.rglob("matches.png")]
    assert len(pictures) == 1 and pictures[0].parent != tmp_path  # not in the folder it was run from
    assert cv2.imread(str(pictures[0])) is not None
