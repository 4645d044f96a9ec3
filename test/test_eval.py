"""`superglue-ros eval` / `eval-compare` end to end on small bags built from real images.

Deterministic (not trained) weights are used, so these tests check the
pipeline -- pairing, scoring, outputs, error handling -- not match quality.
Frames are 320x240 and the network runs at 160 px with 128 keypoints and
20 Sinkhorn iterations to keep the file fast on two CPU cores.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from superglue_ros import metrics as metrics
from superglue_ros.eval.bagio import open_bag
from superglue_ros.cli.main import main
from superglue_ros.cli.eval import summary_line
from superglue_ros.eval.config import EvalConfig
from superglue_ros.eval.run import Outcome, evaluate
from superglue_ros.eval.scoring import candidate_matches, score_synthetic
from superglue_ros.eval.sources import FrameTally, frame_pairs
from superglue_ros.geometry.homography import estimate_homography
from superglue_ros.geometry.pose import NoPose, estimate_relative_pose, pose_error_deg
from superglue_ros.inference.matcher import Matcher
from superglue_ros.stream.messages import Stamp
from test_bagio import PERIOD_NS, START_NS, graffiti_frames, write_image_bag

TOPIC = "/cam/image_raw"
FAST = ["--resize", "160", "--max-keypoints", "128", "--sinkhorn-iterations", "20", "--match-threshold", "0.0",
        "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights_args(weight_files: dict[str, Path]) -> list[str]:
    return ["--superpoint-weights", str(weight_files["superpoint"]),
            "--superglue-weights", str(weight_files["superglue"])]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return graffiti_frames(5)


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory: pytest.TempPathFactory, frames: list[np.ndarray],
               weights_args: list[str]) -> tuple[Path, Path]:
    """One sequential run over a 4-frame sqlite3 bag: (bag, output folder)."""
    folder = tmp_path_factory.mktemp("sqlite_run")
    bag = write_image_bag(folder / "bag", {TOPIC: frames[:4]}, "sqlite3")
    out = folder / "out"
    assert main(["eval", str(bag), "--topic", TOPIC, "--out", str(out)] + weights_args + FAST) == 0
    return bag, out


def fast_matcher(weight_files: dict[str, Path]) -> Matcher:
    return Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                   resize=160, extractor={"max_keypoints": 128},
                   superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0})


def document_of(outcome: Outcome) -> dict:
    """The run's metrics.json document as written (in memory, with NaN where the file has null)."""
    return outcome.document.to_json()


def read_output_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """Messages per topic, decoded only through the definitions embedded in the bag."""
    from rosbags.highlevel import AnyReader

    topics: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, data in reader.messages():
            topics.setdefault(connection.topic, []).append((timestamp, reader.deserialize(data, connection.msgtype)))
    return topics


def test_sequential_run_writes_consistent_outputs(sqlite_run: tuple[Path, Path], capsys) -> None:
    _, out = sqlite_run
    assert sorted(p.name for p in out.iterdir()) == ["matches_bag", "metrics.json", "report.html"]
    document = json.loads((out / "metrics.json").read_text())
    assert document["schema_version"] == 4 and document["partial"] is False
    records = document["pairs"]
    assert [(r["frame0"], r["frame1"]) for r in records] == [(0, 1), (1, 2), (2, 3)]
    summary = document["summary"]
    assert summary["pairs"] == 3
    assert summary["matches"]["median"] == np.median([r["matches"] for r in records])
    assert set(summary["timing_ms"]) == {"decode", "preprocess", "extract", "match", "geometry", "total"}
    assert summary["skipped_frames"] == {"total": 0, "by_reason": {}, "examples": []}
    assert sum(summary["matching_score_histogram"]["counts"]) == sum(r["matches"] for r in records)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert not re.findall(r"""(?:src|href)=["'](?!data:)""", html)  # self-contained: no external assets
    assert "PARTIAL" not in html

    messages = read_output_bag(out / "matches_bag")
    assert len(messages["/superglue/matches"]) == len(messages["/superglue/homography"]) == 3
    for i, ((time0, match), (time1, homography), record) in enumerate(
            zip(messages["/superglue/matches"], messages["/superglue/homography"], records)):
        current = Stamp.from_nanoseconds(START_NS + (i + 1) * PERIOD_NS, "cam")
        assert time0 == time1 == current.nanoseconds  # published when the current frame arrived
        assert (match.header.stamp.sec, match.header.stamp.nanosec, match.header.frame_id) == (
            current.sec, current.nanosec, "cam")
        assert match.reference_header.stamp.nanosec == Stamp.from_nanoseconds(START_NS + i * PERIOD_NS).nanosec
        assert match.mode == 1 and (match.height, match.width) == (240, 320)
        assert len(match.matches) == 2 * record["matches"] and len(match.keypoints) == 2 * record["keypoints1"]
        assert homography.num_inliers == record["inliers"] and homography.valid == record["homography_valid"]
    assert not list(out.glob(".superglue-ros-staging-*"))


def test_compressed_mcap_with_stride_and_max_pairs(tmp_path: Path, frames: list[np.ndarray],
                                                   weight_files: dict[str, Path]) -> None:
    bag_path = write_image_bag(tmp_path / "bag", {"/cam/compressed": frames}, "mcap", compressed=True)
    config = EvalConfig(source=str(bag_path), topic="/cam/compressed", stride=2, max_pairs=1, storage="mcap")
    with open_bag(bag_path) as bag:
        outcome = evaluate(bag, config, fast_matcher(weight_files), tmp_path / "out", progress=False)
    assert [(r["frame0"], r["frame1"]) for r in document_of(outcome)["pairs"]] == [(0, 2)]
    assert document_of(outcome)["input"]["expected_pairs"] == 1
    assert (tmp_path / "out" / "matches_bag" / "matches_bag.mcap").is_file()


def test_ros1_bag_end_to_end(tmp_path: Path, frames: list[np.ndarray], weights_args: list[str], capsys) -> None:
    bag_path = write_image_bag(tmp_path / "cam.bag", {TOPIC: frames[:2]}, "ros1", encoding="bgr8")
    assert main(["eval", str(bag_path), "--topic", TOPIC, "--out", str(tmp_path / "out")] + weights_args + FAST) == 0
    assert "1 pairs: median" in capsys.readouterr().out


def test_stereo_pairs_by_nearest_stamp(tmp_path: Path, frames: list[np.ndarray],
                                       weight_files: dict[str, Path]) -> None:
    stamps = {"/left": [START_NS, START_NS + PERIOD_NS],
              "/right": [START_NS - 40 * 10**6, START_NS + 3 * 10**6, START_NS + PERIOD_NS + 5 * 10**6]}
    bag_path = write_image_bag(tmp_path / "bag", {"/left": frames[:2], "/right": frames[1:4]}, stamps=stamps)
    config = EvalConfig(source=str(bag_path), topic="/left", topic1="/right", mode="stereo", slop=0.01)
    with open_bag(bag_path) as bag:
        outcome = evaluate(bag, config, fast_matcher(weight_files), tmp_path / "out", progress=False)
    assert [(r["frame0"], r["frame1"]) for r in document_of(outcome)["pairs"]] == [(0, 1), (1, 2)]
    assert document_of(outcome)["summary"]["unpaired_frames"] == {"/left": 0, "/right": 1}  # 40 ms off its partner
    assert "without a stereo partner: /left 0, /right 1" in summary_line(outcome.document)
    assert "without a stereo partner: <code>/left</code> 0, <code>/right</code> 1" in (
        tmp_path / "out" / "report.html").read_text()
    messages = read_output_bag(tmp_path / "out" / "matches_bag")["/superglue/matches"]
    assert [m.mode for _, m in messages] == [0, 0]


def test_synthetic_homography_scores_both_methods_on_the_same_keypoints(
        tmp_path: Path, frames: list[np.ndarray], weight_files: dict[str, Path]) -> None:
    from superglue_ros.data.homographies import ground_truth_matches, sample_homography, warp_image

    matcher = fast_matcher(weight_files)
    gray = cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY)
    rng = np.random.default_rng(1)
    h = sample_homography(rng, 240, 320, 0.5)
    pair = matcher.match(gray, warp_image(gray, h, rng))
    scores = score_synthetic(pair, h, estimate_homography(*pair.matched_points()[:2], threshold=3.0))
    kpts0, kpts1 = pair.features0.keypoints.numpy(), pair.features1.keypoints.numpy()
    gt0, _ = ground_truth_matches(kpts0, kpts1, h)
    baseline = metrics.mutual_nearest_neighbours(pair.features0.descriptors.numpy(), pair.features1.descriptors.numpy())
    assert scores["keypoints"] == {"keypoints0": len(kpts0), "keypoints1": len(kpts1),
                                   "ground_truth_matches": int((gt0 >= 0).sum())}
    for name, matches0 in (("mnn", baseline), ("superglue", pair.result.matches0.numpy().reshape(-1))):
        correct, scored, positives = metrics.match_counts(matches0, gt0)
        assert (scores[name]["correct"], scores[name]["scored"]) == (correct, scored)
        assert (scores[name]["precision"], scores[name]["recall"]) == pytest.approx(
            (metrics.ratio_or_nan(correct, scored), metrics.ratio_or_nan(correct, positives)), nan_ok=True)
    by_confidence = scores["superglue"]["by_confidence"]
    first_bin = int(round(100 * matcher.superglue.config["match_threshold"]))
    assert (sum(by_confidence["correct"][first_bin:]), sum(by_confidence["scored"][first_bin:])) == (
        scores["superglue"]["correct"], scores["superglue"]["scored"])
    candidates, _ = candidate_matches(pair)  # below the threshold too: the whole curve
    assert (sum(by_confidence["correct"]), sum(by_confidence["scored"])) == metrics.match_counts(candidates, gt0)[:2]

    bag_path = write_image_bag(tmp_path / "bag", {TOPIC: frames[:2]})
    config = EvalConfig(source=str(bag_path), topic=TOPIC, synthetic=True, strength=0.5)
    with open_bag(bag_path) as bag:
        outcome = evaluate(bag, config, matcher, tmp_path / "out", progress=False)
    records = document_of(outcome)["pairs"]
    assert len(records) == 2 and all(r["keypoints0"] == r["synthetic"]["keypoints"]["keypoints0"] for r in records)
    synthetic = document_of(outcome)["summary"]["synthetic_homography"]
    errors = [r["synthetic"]["mnn"]["corner_error"] for r in records]
    assert synthetic["mnn"]["auc"] == {f"{t:g}px": pytest.approx(v, nan_ok=True) for t, v in
                                       metrics.error_auc(errors, metrics.HOMOGRAPHY_AUC_THRESHOLDS).items()}
    assert not (tmp_path / "out" / "matches_bag").exists()
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Synthetic homography benchmark" in report and "superglue - mnn_ratio" in report
    assert "superglue vs mnn_ratio" in report
    point = synthetic["precision_at_equal_recall"]["mnn_ratio"]
    assert point == metrics.precision_at_recall(
        np.sum([r["synthetic"]["superglue"]["by_confidence"]["correct"] for r in records], axis=0),
        np.sum([r["synthetic"]["superglue"]["by_confidence"]["scored"] for r in records], axis=0),
        sum(r["synthetic"]["keypoints"]["ground_truth_matches"] for r in records),
        synthetic["mnn_ratio"]["recall_pooled"]) | {"gain": pytest.approx(
            point["precision_pooled"] - synthetic["mnn_ratio"]["precision_pooled"], nan_ok=True)}
    mnn = [r["synthetic"]["mnn"] for r in records]
    assert synthetic["mnn"]["precision_pooled"] == pytest.approx(
        sum(m["correct"] for m in mnn) / sum(m["scored"] for m in mnn))
    assert synthetic["mnn"]["recall_pooled"] == pytest.approx(
        sum(m["correct"] for m in mnn) / sum(r["synthetic"]["keypoints"]["ground_truth_matches"] for r in records))
    ratio = [r["synthetic"]["mnn_ratio"] for r in records]
    assert all(r["matches"] <= m["matches"] for r, m in zip(ratio, (r["synthetic"]["mnn"] for r in records)))
    assert synthetic["gain_vs_ratio_test"]["precision"] == pytest.approx(
        synthetic["superglue"]["precision"] - synthetic["mnn_ratio"]["precision"], nan_ok=True)
    interval = metrics.auc_difference_interval([r["synthetic"]["superglue"]["corner_error"] for r in records],
                                               [m["corner_error"] for m in ratio], [0, 1],
                                               metrics.HOMOGRAPHY_AUC_THRESHOLDS)[3.0]
    assert synthetic["gain_vs_ratio_test"]["auc@3px_ci95"] == pytest.approx(list(interval), nan_ok=True)


def test_image_folder_synthetic_benchmark_with_several_warps(
        tmp_path: Path, frames: list[np.ndarray], weights_args: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """A plain folder of photographs is an input (topic 'images'); --warps K gives K pairs per image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, frame in enumerate(frames[:2]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["eval", str(folder), "--synthetic-homography", "--warps", "2", "--out", str(out)]
                + weights_args + FAST) == 0
    printed = capsys.readouterr().out
    assert "MNN+ratio" in printed and "95% CI over images" in printed
    document = json.loads((out / "metrics.json").read_text())
    pairs = document["pairs"]
    assert [r["frame0"] for r in pairs] == [0, 0, 1, 1]
    assert [(r["name0"], r["name1"]) for r in pairs[1:3]] == [("00.png", "00.png (warped)"),
                                                              ("01.png", "01.png (warped)")]
    truths = [r["synthetic"]["keypoints"] for r in pairs]
    assert truths[0] != truths[1]  # two different warps of the same image
    with open_bag(folder) as source:  # warped at the matcher's working size: thresholds in its pixels
        pair = next(frame_pairs(source, EvalConfig(source=str(folder), topic="images", synthetic=True), FrameTally(),
                                None, 160))
    assert pair.frame0.image.shape == pair.frame1.image.shape == (120, 160)
    code = main(["eval", str(folder), "--warps", "2", "--out", str(out)] + weights_args + FAST)
    assert code == 2 and "--warps" in capsys.readouterr().err
    assert main(["eval", str(folder), "--out", str(out)] + weights_args + FAST) == 0  # consecutive images
    err = capsys.readouterr().err
    assert f"replaced an earlier run's metrics.json, report.html in {out}" in err
    document = json.loads((out / "metrics.json").read_text())
    assert [(r["name0"], r["name1"]) for r in document["pairs"]] == [("00.png", "01.png")]
    assert (out / "matches_bag" / "metadata.yaml").is_file()  # image folders too, as the README says
    code = main(["eval", str(folder), "--mode", "stereo", "--topic1", "/right", "--out", str(out)]
                + weights_args + FAST)
    assert code == 2 and "folder of images has only images" in capsys.readouterr().err


def test_interrupt_leaves_partial_report(tmp_path: Path, frames: list[np.ndarray],
                                         weight_files: dict[str, Path]) -> None:
    bag_path = write_image_bag(tmp_path / "bag", {TOPIC: frames[:4]})

    def interrupt(record: dict) -> None:
        raise KeyboardInterrupt

    with open_bag(bag_path) as bag:
        outcome = evaluate(bag, EvalConfig(source=str(bag_path), topic=TOPIC), fast_matcher(weight_files),
                           tmp_path / "out", on_pair=interrupt, progress=False)
    assert isinstance(outcome.interrupted, KeyboardInterrupt)
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["partial"] is True and document["summary"]["pairs"] == 1
    assert document["input"]["expected_pairs"] == 3
    assert "PARTIAL (interrupted): 1 of 3 pairs" in (tmp_path / "out" / "report.html").read_text()
    assert len(read_output_bag(tmp_path / "out" / "matches_bag")["/superglue/matches"]) == 1


def test_relative_pose_from_essential_matrix() -> None:
    rng = np.random.default_rng(0)
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    points = rng.uniform([-2, -2, 4], [2, 2, 8], size=(200, 3))
    from superglue_ros.geometry.pose import quaternion_to_rotation

    r_true = quaternion_to_rotation(0.02, -0.05, 0.03, 1.0)
    t_true = np.array([0.5, 0.1, 0.05])
    in1 = points @ r_true.T + t_true
    pixels0 = (points @ k.T)[:, :2] / points[:, 2:]
    pixels1 = (in1 @ k.T)[:, :2] / in1[:, 2:]
    pixels1[:30] = rng.uniform([0, 0], [640, 480], size=(30, 2))  # outliers
    r_est, t_est, _ = estimate_relative_pose(pixels0, pixels1, k, k)
    assert pose_error_deg(r_est, t_est, r_true, t_true) < 1.0
    assert estimate_relative_pose(pixels0[:4], pixels1[:4], k, k) == NoPose("too_few_matches")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert pattern in lines[0], lines[0]


def test_bad_inputs_are_one_line_errors(tmp_path: Path, frames: list[np.ndarray], weights_args: list[str],
                                        sqlite_run: tuple[Path, Path], capsys) -> None:
    bag, _ = sqlite_run
    out = str(tmp_path / "out")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "missing"), "--topic", TOPIC, "--out", out)
    assert_one_line_error(code, err, "no such file or folder")
    code, _, err = run_cli(capsys, "eval", str(bag), "--topic", "/nope", "--out", out, *weights_args)
    assert_one_line_error(code, err, f"topic /nope is not in the bag; image topics in {bag}: {TOPIC} (Image)")
    code, _, err = run_cli(capsys, "eval", str(bag), "--out", out)
    assert_one_line_error(code, err, f"--topic is required; image topics in {bag}: {TOPIC} (Image, 4 msgs)")
    single = write_image_bag(tmp_path / "single", {TOPIC: frames[:1]})
    code, _, err = run_cli(capsys, "eval", str(single), "--topic", TOPIC, "--out", out, *weights_args, *FAST)
    assert_one_line_error(code, err, "no pairs to evaluate")
    bayer = write_image_bag(tmp_path / "bayer", {TOPIC: [f[:, :, 0] for f in frames[:2]]}, encoding="bayer_rggb8")
    code, _, err = run_cli(capsys, "eval", str(bayer), "--topic", TOPIC, "--out", out, *weights_args, *FAST)
    assert_one_line_error(code, err, "unsupported image encoding 'bayer_rggb8'")
    code, _, err = run_cli(capsys, "eval", str(bag), "--topic", TOPIC, "--mode", "stereo", "--out", out)
    assert_one_line_error(code, err, "--mode stereo needs --topic1")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_is_one_line_error(tmp_path: Path, frames: list[np.ndarray], weights_args: list[str],
                                         storage: str, capsys) -> None:
    bag_path = write_image_bag(tmp_path / "bag", {TOPIC: frames[:3]}, storage)
    data_file = next(p for p in bag_path.iterdir() if p.suffix in (".db3", ".mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    code, _, err = run_cli(capsys, "eval", str(bag_path), "--topic", TOPIC, "--out", str(tmp_path / "out"),
                           *weights_args, *FAST)
    assert_one_line_error(code, err, "cannot read")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_eval_compare_prints_table_and_flags_regressions(tmp_path: Path, sqlite_run: tuple[Path, Path],
                                                         capsys) -> None:
    _, out = sqlite_run
    worse = tmp_path / "worse"
    shutil.copytree(out, worse)
    document = json.loads((worse / "metrics.json").read_text())
    document["summary"]["matches"]["median"] = document["summary"]["matches"]["median"] * 0.5 - 1
    (worse / "metrics.json").write_text(json.dumps(document))
    code, text, _ = run_cli(capsys, "eval-compare", str(out), str(out))
    assert code == 0 and "no regressions" in text
    assert text.splitlines()[2].split() == ["metric", "A", "B", "B", "-", "A"]
    code, text, _ = run_cli(capsys, "eval-compare", str(out), str(worse), "--fail-on-regression")
    row = next(line for line in text.splitlines() if line.startswith("matches median"))
    assert code == 1 and row.endswith("REGRESSION") and "1 regression(s)" in text
    code, _, err = run_cli(capsys, "eval-compare", str(out), str(tmp_path / "nothing"))
    assert_one_line_error(code, err, "no metrics.json")


def test_eval_compare_reads_schema_1_runs_that_named_the_front_end_superpoint(
        tmp_path: Path, sqlite_run: tuple[Path, Path], capsys) -> None:
    _, out = sqlite_run
    document = json.loads((out / "metrics.json").read_text())
    timing = document["summary"]["timing_ms"]
    old = {**document, "schema_version": 1,
           "summary": {**document["summary"], "timing_ms": {
               {"extract": "superpoint", "match": "superglue"}.get(k, k): v for k, v in timing.items()}}}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    code, text, _ = run_cli(capsys, "eval-compare", str(tmp_path), str(out))
    row = next(line for line in text.splitlines() if line.startswith("extract ms median"))
    run_a, run_b = row.split()[3:5]
    assert code == 0 and run_a == run_b != "-"


def test_pose_intervals_are_kept_through_the_file_and_older_files_read_without_them() -> None:
    from superglue_ros.cli.eval import pose_text
    from superglue_ros.eval.schema import PoseScores, PoseSummary, Stats

    stats = Stats(3, 0, 5.0, 5.0, 5.0, 5.0, 5.0)
    scores = PoseScores(3, {"5deg": 0.1, "10deg": 0.2, "20deg": 0.3}, 0.5, 0.2, stats, stats, {},
                        {"5deg": [0.0, 0.3], "10deg": [0.1, 0.4], "20deg": [0.2, 0.5]}, [0.4, 0.6])
    drawn = {"method": "percentile bootstrap", "resamples": 1000, "resampled": "pairs"}
    pose = PoseSummary(scores, {"mnn_ratio": scores}, {}, drawn)
    assert PoseSummary.from_json(json.loads(json.dumps(pose.to_json()))) == pose
    assert "AUC@5/10/20deg 10.0/20.0/30.0 [0.0-30.0]/[10.0-40.0]/[20.0-50.0], precision 50.0% [40.0-60.0]" in \
        pose_text(pose) and "1000 resamples of pairs" in pose_text(pose)
    version3 = {key: value for key, value in pose.to_json().items()
                if key not in ("auc_ci95", "precision_ci95", "intervals")}
    old = PoseSummary.from_json(version3)
    assert old.superglue.auc_ci95 == {} and old.superglue.precision_ci95 is None and old.intervals == {}
    assert "[" not in pose_text(old).split("(MNN+ratio")[0] and "resamples" not in pose_text(old)
    with pytest.raises(ValueError, match="precision_ci95 must be an interval"):
        PoseSummary.from_json({**version3, "precision_ci95": [0.5]})


def test_eval_compare_gives_intervals_for_the_same_synthetic_pairs(
        tmp_path: Path, frames: list[np.ndarray], weights_args: list[str], capsys) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, frame in enumerate(frames[:3]):
        cv2.imwrite(str(folder / f"{i:02d}.png"), frame)
    run_a = tmp_path / "a"
    assert main(["eval", str(folder), "--synthetic-homography", "--out", str(run_a)] + weights_args + FAST) == 0
    document = json.loads((run_a / "metrics.json").read_text())
    for record in document["pairs"]:
        record["synthetic"]["superglue"]["corner_error"] = 0.0  # B: exact on every image
    run_b = tmp_path / "b"
    run_b.mkdir()
    (run_b / "metrics.json").write_text(json.dumps(document))
    capsys.readouterr()

    def interval(text: str) -> tuple[float, float]:
        found = re.search(r"3px \[([-+.0-9]+), ([-+.0-9]+)\]", text)
        assert found, text
        return float(found[1]), float(found[2])

    assert interval(run_cli(capsys, "eval-compare", str(run_a), str(run_a))[1]) == (0.0, 0.0)
    low, high = interval(run_cli(capsys, "eval-compare", str(run_a), str(run_b))[1])
    assert 0.0 < low <= high
    document["input"]["warps"] = 2  # other pairs: no pairing, and the table says the inputs differ
    (run_b / "metrics.json").write_text(json.dumps(document))
    text = run_cli(capsys, "eval-compare", str(run_a), str(run_b))[1]
    assert "differ in warps" in text and "95% intervals" not in text


def write_posed_bag(path: Path, frames: list[np.ndarray], pose_kind: str,
                    k: np.ndarray = np.array([250.0, 0, 160, 0, 250, 120, 0, 0, 1]),
                    xs: list[float] | None = None) -> Path:
    """Images, a CameraInfo with intrinsics ``k`` and camera-to-world poses (PoseStamped or /tf) at the image
    stamps; the camera moves along x, by 5 cm a frame unless ``xs`` says where each pose is."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from superglue_ros.eval.bagio import build_message
    from test_bagio import image_message

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    pose_type = "geometry_msgs/msg/PoseStamped" if pose_kind == "pose" else "tf2_msgs/msg/TFMessage"
    with Writer(path, version=8) as writer:
        images = writer.add_connection(TOPIC, "sensor_msgs/msg/Image", typestore=typestore)
        info = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore)
        poses = writer.add_connection("/gt", pose_type, typestore=typestore)
        for i, frame in enumerate(frames):
            stamp = START_NS + i * PERIOD_NS
            header = Stamp.from_nanoseconds(stamp, "cam").header()
            writer.write(images, stamp, typestore.serialize_cdr(image_message(typestore, frame, "bgr8", stamp),
                                                                "sensor_msgs/msg/Image"))
            camera = build_message(typestore, "sensor_msgs/msg/CameraInfo", {
                "header": header, "height": 240, "width": 320, "distortion_model": "plumb_bob", "d": np.zeros(5),
                "k": k, "r": np.eye(3).reshape(9),
                "p": np.zeros(12), "binning_x": 0, "binning_y": 0,
                "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}})
            writer.write(info, stamp, typestore.serialize_cdr(camera, "sensor_msgs/msg/CameraInfo"))
            position = {"x": 0.05 * i if xs is None else xs[i], "y": 0.0, "z": 0.0}
            orientation = {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}
            if pose_kind == "pose":
                fields = {"header": header, "pose": {"position": position, "orientation": orientation}}
            else:
                fields = {"transforms": [build_message(typestore, "geometry_msgs/msg/TransformStamped", {
                    "header": Stamp.from_nanoseconds(stamp, "world").header(), "child_frame_id": "cam",
                    "transform": {"translation": position, "rotation": orientation}})]}
            writer.write(poses, stamp, typestore.serialize_cdr(build_message(typestore, pose_type, fields), pose_type))
    return path


@pytest.mark.parametrize("pose_kind", ["pose", "tf"])
def test_ground_truth_poses_give_pose_metrics(tmp_path: Path, frames: list[np.ndarray],
                                              weight_files: dict[str, Path], pose_kind: str) -> None:
    bag_path = write_posed_bag(tmp_path / "bag", frames[:3], pose_kind)
    config = EvalConfig(source=str(bag_path), topic=TOPIC, gt_topic="/gt")
    with open_bag(bag_path) as bag:
        outcome = evaluate(bag, config, fast_matcher(weight_files), tmp_path / "out", progress=False)
    pose = document_of(outcome)["summary"]["pose"]
    assert pose["scored_pairs"] == 2 and set(pose["auc"]) == {"5deg", "10deg", "20deg"}
    assert set(pose["baselines"]) == {"mnn", "mnn_ratio"} and 0 <= pose["precision"] <= 1
    errors = [r["pose"]["superglue"]["error"] for r in document_of(outcome)["pairs"]]
    assert pose["auc"] == pytest.approx(
        {f"{t:g}deg": v for t, v in metrics.error_auc(errors, metrics.POSE_AUC_THRESHOLDS).items()})
    assert "Relative pose" in (tmp_path / "out" / "report.html").read_text()


def test_eval_compare_gives_pose_intervals_for_the_same_posed_pairs(
        tmp_path: Path, frames: list[np.ndarray], weight_files: dict[str, Path], capsys) -> None:
    bag_path = write_posed_bag(tmp_path / "bag", frames[:4], "pose")
    run_a = tmp_path / "a"
    with open_bag(bag_path) as bag:
        evaluate(bag, EvalConfig(source=str(bag_path), topic=TOPIC, gt_topic="/gt"), fast_matcher(weight_files),
                 run_a, progress=False)
    document = json.loads((run_a / "metrics.json").read_text())
    assert sum(record["pose"] is not None for record in document["pairs"]) == 3
    for record in document["pairs"]:
        record["pose"]["superglue"]["error"] = 0.0  # B: every pose exact
    run_b = tmp_path / "b"
    run_b.mkdir()
    (run_b / "metrics.json").write_text(json.dumps(document))

    def interval(text: str) -> tuple[float, float]:
        found = re.search(r"pose AUC B - A .* over pairs: 5deg \[[-+.0-9]+, [-+.0-9]+\], 10deg \[([-+.0-9]+), "
                          r"([-+.0-9]+)\]", text)
        assert found, text
        return float(found[1]), float(found[2])

    assert interval(run_cli(capsys, "eval-compare", str(run_a), str(run_a))[1]) == (0.0, 0.0)
    low, high = interval(run_cli(capsys, "eval-compare", str(run_a), str(run_b))[1])
    assert 0.0 < low <= high
    assert "over images" not in run_cli(capsys, "eval-compare", str(run_a), str(run_b))[1]  # no synthetic pairs
    for record in document["pairs"]:  # as older files wrote them: SuperGlue's pose scores alone
        record["pose"] = record["pose"]["superglue"]
    (run_b / "metrics.json").write_text(json.dumps(document))
    assert interval(run_cli(capsys, "eval-compare", str(run_a), str(run_b))[1]) == (low, high)
    document["pairs"] = document["pairs"][1:]  # other pairs: no pairing
    (run_b / "metrics.json").write_text(json.dumps(document))
    assert "95% intervals" not in run_cli(capsys, "eval-compare", str(run_a), str(run_b))[1]


@pytest.mark.parametrize("k", [np.zeros(9), np.full(9, np.nan)], ids=["zeros", "nan"])
def test_camera_info_without_intrinsics_is_counted_not_fatal(tmp_path: Path, frames: list[np.ndarray],
                                                             weight_files: dict[str, Path], k: np.ndarray) -> None:
    """A CameraInfo whose K was never filled in: every pair is written, without a pose, counted by reason."""
    bag_path = write_posed_bag(tmp_path / "bag", frames[:3], "pose", k)
    config = EvalConfig(source=str(bag_path), topic=TOPIC, gt_topic="/gt")
    with open_bag(bag_path) as bag:
        outcome = evaluate(bag, config, fast_matcher(weight_files), tmp_path / "out", progress=False)
    document = document_of(outcome)
    pose = document["summary"]["pose"]
    assert pose["scored_pairs"] == 2 and pose["failures"] == {"bad_intrinsics": 2}
    assert pose["baselines"]["mnn"]["failures"] == {"bad_intrinsics": 2}
    assert [r["pose"]["superglue"]["failure"] for r in document["pairs"]] == ["bad_intrinsics"] * 2
    assert "bad_intrinsics 2" in (tmp_path / "out" / "report.html").read_text()


@pytest.fixture(scope="module")
def rendered_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three rendered 3D scene pairs with ground-truth poses, as `superglue-ros pairs scenes` writes them."""
    folder = tmp_path_factory.mktemp("rendered")
    assert main(["pairs", "scenes", "--out", str(folder), "--count", "3", "--seed", "4", "--size", "320", "240",
                 "--no-progress"]) == 0
    return folder


def test_pair_list_is_scored_as_the_reference_scores_it(rendered_pairs: Path, tmp_path: Path,
                                                        weights_args: list[str], capsys) -> None:
    """A pair list with poses: every matcher's pose AUC, precision and matching score, recomputed here from
    the records; a line with names only is matched and reported without scores."""
    pairs = rendered_pairs / "pairs.txt"
    lines = pairs.read_text().splitlines()
    names_only = tmp_path / "pairs.txt"
    names_only.write_text("\n".join(lines + [" ".join(lines[0].split()[:2])]) + "\n")
    out = tmp_path / "out"
    code = main(["eval", str(names_only), "--images", str(rendered_pairs), "--resize", "320", "240", "--out", str(out),
                 *weights_args, "--max-keypoints", "128", "--sinkhorn-iterations", "20", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "pose AUC@5/10/20deg" in printed and "MNN+ratio" in printed
    assert "[95% intervals: percentile bootstrap, 1000 resamples of pairs]" in printed
    document = json.loads((out / "metrics.json").read_text())
    records, pose = document["pairs"], document["summary"]["pose"]
    assert len(records) == 4 and records[3].get("pose") is None and pose["scored_pairs"] == 3
    assert set(pose["auc"]) == {"5deg", "10deg", "20deg"} and set(pose["baselines"]) == {"mnn", "mnn_ratio"}
    for name, scores in [("superglue", pose)] + list(pose["baselines"].items()):
        errors = [r["pose"][name]["error"] for r in records[:3]]
        expected = metrics.error_auc([math.inf if e is None else e for e in errors], metrics.POSE_AUC_THRESHOLDS)
        aucs = [scores["auc"][f"{t:g}deg"] for t in metrics.POSE_AUC_THRESHOLDS]
        assert aucs == pytest.approx(list(expected.values()))
        assert scores["precision"] == pytest.approx(np.mean([r["pose"][name]["precision"] for r in records[:3]]))
        assert 0 <= scores["matching_score"] <= 1
        intervals = metrics.auc_interval([math.inf if e is None else e for e in errors], range(3),
                                         metrics.POSE_AUC_THRESHOLDS)
        assert scores["auc_ci95"] == {f"{t:g}deg": pytest.approx(list(b)) for t, b in intervals.items()}
        precision = metrics.mean_interval([r["pose"][name]["precision"] for r in records[:3]], range(3))
        assert scores["precision_ci95"] == pytest.approx(list(precision))
    assert pose["intervals"] == {"level": 0.95, "method": "percentile bootstrap", "resampled": "pairs",
                                 "resamples": 1000, "seed": 0}
    html = (out / "report.html").read_text()
    assert not (out / "matches_bag").exists() and "Relative pose" in html and "1000 resamples of pairs" in html


def test_pair_without_motion_is_a_counted_failure_not_the_end(rendered_pairs: Path, tmp_path: Path, capsys) -> None:
    """An image against itself (no motion, no pose) among good pairs: the good pairs are scored and written,
    the other is reported as a failure with its reason, and the run succeeds."""
    lines = (rendered_pairs / "pairs.txt").read_text().splitlines()
    fields = lines[0].split()
    still = " ".join([fields[0], fields[0], "0", "0", *fields[4:13], *fields[4:13], *map(str, np.eye(4).ravel())])
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join([lines[0], still, lines[1]]) + "\n")
    out = tmp_path / "out"
    code = main(["eval", str(pairs), "--images", str(rendered_pairs), "--resize", "320", "240", "--out", str(out),
                 "--weights", "sift_open", "--max-keypoints", "256", "--no-progress"])  # the bundled model matches
    assert code == 0 and "no pose: no_motion 1" in capsys.readouterr().out
    document = json.loads((out / "metrics.json").read_text())
    records, pose = document["pairs"], document["summary"]["pose"]
    assert len(records) == 3 and pose["scored_pairs"] == 3 and pose["failures"] == {"no_motion": 1}
    superglue = [record["pose"]["superglue"] for record in records]
    assert superglue[1]["failure"] == "no_motion" and superglue[1]["error"] is None  # infinite, null in JSON
    assert all(superglue[i]["failure"] is None and math.isfinite(superglue[i]["error"]) for i in (0, 2))
    assert "no_motion 1" in (out / "report.html").read_text()


def test_unreadable_pairs_are_skipped_and_counted(rendered_pairs: Path, tmp_path: Path, weights_args: list[str],
                                                  capsys) -> None:
    images = tmp_path / "images"
    shutil.copytree(rendered_pairs, images)
    first = (rendered_pairs / "pairs.txt").read_text().splitlines()[0].split()[0]
    (images / first).write_bytes((images / first).read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    code = main(["eval", str(images / "pairs.txt"), "--images", str(images), "--out", str(out), *weights_args,
                 "--max-keypoints", "64", "--sinkhorn-iterations", "10", "--no-progress"])
    assert code == 0 and "skipped 1 (truncated 1)" in capsys.readouterr().out
    skipped = json.loads((out / "metrics.json").read_text())["summary"]["skipped_frames"]
    assert skipped["total"] == 1 and "truncated PNG" in skipped["examples"][0]
    code = main(["eval", str(images / "pairs.txt"), "--images", str(images), "--out", str(out), *weights_args,
                 "--max-bad-frames", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "more than --max-bad-frames 0" in err and len(err.strip().splitlines()) == 1
