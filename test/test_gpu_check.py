"""scripts/gpu_check.sh without a GPU: its command lines parse, it stops at once without CUDA, and the
one-process runner it uses records each command's output and exit status."""
from __future__ import annotations

import os
import shlex
import subprocess
import time

import pytest
import torch

from superglue_ros.cli.run_list import read_commands, run_commands
from superglue_ros.cli.main import build_parser

from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"


def dry_run(**environment: str) -> list[tuple[str, list[str]]]:
    done = subprocess.run([str(SCRIPT)], env={**os.environ, "DRY_RUN": "1", **environment}, capture_output=True,
                          text=True, timeout=60, check=True)
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    return [(name, shlex.split(arguments)) for name, arguments in lines]


def test_every_command_line_is_accepted_by_the_cli_parser(tmp_path):
    commands = dry_run(OUT=str(tmp_path / "out dir"), SUPERGLUE_REFERENCE=str(tmp_path / "ref"))
    parsed = {name: build_parser().parse_args(arguments) for name, arguments in commands}
    assert len(set(parsed)) == len(commands)  # names (output files) are unique
    assert all(args.command == "bench" and args.device == "cuda" for args in parsed.values())
    assert all(args.json == str(tmp_path / "out dir" / f"{name}.json") for name, args in parsed.items())
    plain = [args for args in parsed.values() if not args.reference and not args.cameras]
    assert {(tuple(a.resize), a.max_keypoints, a.precision, a.mode) for a in plain if a.weights == "auto"} == {
        (size, keypoints, precision, mode) for size in ((640, 480), (1280, 720)) for keypoints in (1024, 2048)
        for precision in ("fp32", "fp16") for mode in ("pair", "stream")}
    assert {(tuple(a.resize), a.max_keypoints, a.precision) for a in plain if a.backend == "fixed"} == {
        (size, keypoints, precision) for size in ((640, 480), (1280, 720)) for keypoints in (1024, 2048)
        for precision in ("fp32", "fp16")}
    assert all(a.mode == "stream" for a in plain if a.backend == "fixed")
    assert sorted((a.backend, a.precision) for a in parsed.values() if a.cameras) == [
        ("fixed", "fp16"), ("fixed", "fp32"), ("torch", "fp16"), ("torch", "fp32")]
    assert all(a.cameras == [1, 2, 4, 8] for a in parsed.values() if a.cameras)
    open_models = sorted((a.weights, a.backend) for a in parsed.values() if a.weights != "auto")
    assert open_models == [("sift_open", "torch"), ("xfeat_open", "fixed"), ("xfeat_open", "torch")]
    references = [a for a in parsed.values() if a.reference]
    assert len(references) == 4 and all(a.reference == str(tmp_path / "ref") for a in references)


def test_without_cuda_the_script_stops_at_once_with_the_reason(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the script would run the measurements")
    start = time.monotonic()
    done = subprocess.run([str(SCRIPT)], env={**os.environ, "OUT": str(tmp_path / "out")}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and time.monotonic() - start < 10
    assert "gpu_check:" in done.stderr and ("no CUDA device" in done.stderr or "cannot use the GPU" in done.stderr)
    assert not (tmp_path / "out").exists()


def test_runner_records_each_commands_output_and_status_and_keeps_going(tmp_path):
    listing = tmp_path / "commands.txt"
    listing.write_text("bad\tbench --pairs 0\n\nhelp\tpairs --help\n")
    assert read_commands(listing) == [("bad", ["bench", "--pairs", "0"]), ("help", ["pairs", "--help"])]
    summary = run_commands(read_commands(listing), tmp_path / "out", budget_seconds=60)
    assert [line.split(",")[0] for line in summary] == ["bad: exit 2", "help: exit 0"]
    assert "--pairs" in (tmp_path / "out" / "bad.txt").read_text()
    assert "usage" in (tmp_path / "out" / "help.txt").read_text()
    assert run_commands(read_commands(listing), tmp_path / "out", budget_seconds=-1) == [
        "bad: skipped, the -1 s budget is spent", "help: skipped, the -1 s budget is spent"]
