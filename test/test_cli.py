"""The `superglue-ros` console script as a user runs it: a real subprocess, real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "superglue_ros", *args], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1], env=env)


@pytest.fixture(scope="module")
def image_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A textured image and a copy shifted by 12 px, as files."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    image = cv2.resize(rng.integers(0, 256, (24, 32), dtype=np.uint8), (256, 192), interpolation=cv2.INTER_CUBIC)
    shifted = np.zeros_like(image)
    shifted[:, 12:] = image[:, :-12]
    paths = folder / "a.png", folder / "b.png"
    cv2.imwrite(str(paths[0]), image)
    cv2.imwrite(str(paths[1]), shifted)
    return paths


def test_match_writes_json_and_visualisation(image_pair, weight_files, tmp_path):
    out_json, out_png = tmp_path / "m.json", tmp_path / "m.png"
    done = run_cli("match", *map(str, image_pair), "--superpoint-weights", str(weight_files["superpoint"]),
                   "--superglue-weights", str(weight_files["superglue"]), "--max-keypoints", "128",
                   "--match-threshold", "0", "--json", str(out_json), "--viz", str(out_png))
    assert done.returncode == 0, done.stderr
    assert "matches" in done.stdout and "match " in done.stdout
    result = json.loads(out_json.read_text())
    assert len(result["matches"]) == len(result["confidences"]) > 0
    assert result["image_size0"] == result["image_size1"] == {"width": 256, "height": 192}
    assert cv2.imread(str(out_png)).shape == (192, 256 * 2 + 10, 3)


def test_match_with_the_fixed_backend_gives_the_torch_backends_matches(image_pair, weight_files, tmp_path):
    results = {}
    for backend in ("torch", "fixed"):
        out_json = tmp_path / f"{backend}.json"
        done = run_cli("match", *map(str, image_pair), "--superpoint-weights", str(weight_files["superpoint"]),
                       "--superglue-weights", str(weight_files["superglue"]), "--max-keypoints", "128",
                       "--match-threshold", "0", "--backend", backend, "--json", str(out_json))
        assert done.returncode == 0, done.stderr
        results[backend] = json.loads(out_json.read_text())
    assert len(results["fixed"]["matches"]) > 0 and results["fixed"]["matches"] == results["torch"]["matches"]
    np.testing.assert_allclose(results["fixed"]["confidences"], results["torch"]["confidences"], atol=1e-5)
    done = run_cli("match", *map(str, image_pair), "--weights", "sift_open", "--backend", "fixed")
    assert done.returncode == 2 and "SIFT runs on the CPU" in done.stderr and len(done.stderr.splitlines()) == 1


def test_pairs_demo_writes_two_views_under_their_homography(tmp_path):
    done = run_cli("pairs", "demo", "--out", str(tmp_path / "samples"), "--size", "320", "240", "--seed", "3")
    assert done.returncode == 0, done.stderr
    image0, image1 = (cv2.imread(str(tmp_path / "samples" / f"image{i}.png"), cv2.IMREAD_UNCHANGED) for i in (0, 1))
    assert image0.shape == image1.shape == (240, 320) and image0.dtype == np.uint8
    h = np.loadtxt(tmp_path / "samples" / "homography.txt")
    warped = cv2.warpPerspective(image0, h, (320, 240))
    covered = cv2.warpPerspective(np.ones_like(image0), h, (320, 240), flags=cv2.INTER_NEAREST) > 0
    covered = cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    correlation = np.corrcoef(warped[covered].astype(float), image1[covered].astype(float))[0, 1]
    assert covered.mean() > 0.3 and correlation > 0.9  # the same scene up to photometric noise
    unrelated = np.corrcoef(image0[covered].astype(float), image1[covered].astype(float))[0, 1]
    assert unrelated < 0.5


@pytest.mark.parametrize("make_bad", [
    lambda folder: folder / "missing.png",
    lambda folder: (folder / "garbage.png").write_bytes(b"not an image") and folder / "garbage.png",
])
def test_unreadable_image_is_exit_2_with_one_line(image_pair, tmp_path, make_bad):
    done = run_cli("match", str(make_bad(tmp_path)), str(image_pair[1]))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read image" in lines[0] and "Traceback" not in done.stderr


def test_missing_weights_is_exit_2_with_remedy(image_pair, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SUPERGLUE_ROS_WEIGHTS_DIR"}
    done = run_cli("match", *map(str, image_pair), "--weights", "indoor", "--weights-dir", str(tmp_path),
                   env={**env, "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "superglue-ros weights download" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_commands():
    done = run_cli("--help")
    assert done.returncode == 0 and "match" in done.stdout and "weights" in done.stdout


@pytest.mark.parametrize("command", ["eval", "train"])
def test_eval_and_train_options_are_their_settings(command: str) -> None:
    """One declaration per option: the parser's default and range checks, and the config's default, all come
    from the command's settings, so none can disagree with another."""
    import argparse
    import dataclasses

    from superglue_ros.cli.main import build_parser
    from superglue_ros.eval import config as eval_config
    from superglue_ros.train import config as train_config

    settings, config_class = {"eval": (eval_config.SETTINGS, eval_config.EvalConfig),
                              "train": (train_config.SETTINGS, train_config.TrainConfig)}[command]
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = {action.dest: action for action in subparsers.choices[command]._actions}
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    for setting in settings:
        action = actions[setting.name]
        assert action.default == setting.default == defaults[setting.name], setting.name
        if setting.kind in (int, float) and setting.low is not None:
            with pytest.raises(argparse.ArgumentTypeError, match=setting.name):
                action.type(str(setting.low - 1))
