"""The benchmark's arithmetic and its command, on tiny inputs (speed itself is never asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import functools

from superglue_ros.bench.reference import synchronizer, timed
from superglue_ros.bench.speed import (BenchResult, benchmark, count_pair, format_report, load_frames, match_agreement,
                                       pairs_for, summarize, superglue_flop, timed_as)
from superglue_ros.inference.matcher import Matcher
from superglue_ros.models.types import Features, MatchResult
from superglue_ros.inference.matcher import PairMatch
from superglue_ros.files.images import ImageReadError

from conftest import REPO


def test_flop_count_by_hand():
    # one self layer, n = m = 2, D = 4, no Sinkhorn: 20*16*4 + 2*2*(4+4)*4 + 2*16*4 + 2*2*2*4
    assert superglue_flop(2, 2, 4, ["self"], 0) == 1280 + 128 + 128 + 32
    # a cross layer costs 4nm D per direction pair, Sinkhorn 4 (n+1)(m+1) per iteration
    assert superglue_flop(1, 3, 2, ["cross"], 10) == 20 * 4 * 4 + 2 * 4 * 3 * 2 + 2 * 4 * 4 + 2 * 3 * 2 + 4 * 2 * 4 * 10


def test_pairs_for_modes():
    frames = list(range(5))
    assert pairs_for(frames, "stream") == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert pairs_for(frames, "pair") == [(0, 1), (2, 3)]


def test_summarize():
    assert summarize([1.0, 2.0, 3.0], 1e3) == {"median": 2000.0, "p95": pytest.approx(2900.0)}
    assert summarize([]) == {"median": None, "p95": None}


def test_on_cuda_a_pair_timed_stage_by_stage_gives_no_whole_pair_time():
    """Stage clocks synchronise on CUDA, which a whole pair's time must not pay; elsewhere they cost nothing."""
    plan = [timed_as(torch.device("cuda"), index) for index in range(8)]
    assert plan[3] == plan[7] == (True, False) and all(staged != whole for staged, whole in plan)
    assert sum(staged for staged, _ in plan) == 2 and plan[0] == (False, True)  # one timed pair: a whole time
    assert timed_as(torch.device("cuda"), -1) == (False, True)  # warm-up pairs are not profiled
    assert all(timed_as(torch.device("cpu"), index) == (True, True) for index in range(8))


def test_a_report_with_stages_and_totals_from_different_pairs_says_so():
    result = BenchResult(config={"device": "cuda"}, stage_seconds={"extract": [0.004]}, pair_seconds=[0.01, 0.012],
                         superglue_flop=[1e9])
    report = result.as_dict()
    assert report["timed_pairs"] == {"whole": 2, "by_stage": 1}
    assert "stages from 1 pairs timed stage by stage, synchronised after each; the total from 2 others" in \
        format_report(report)


def test_benchmark_on_the_cpu_times_every_pair_whole_and_by_stage(weight_files):
    matcher = Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                      extractor={"max_keypoints": 32}, superglue={"sinkhorn_iterations": 5})
    result = benchmark(matcher, load_frames(None, 4, (96, 72)), "stream", 1, {})
    assert len(result.pair_seconds) == len(result.stage_seconds["extract"]) == len(result.superglue_flop) == 2
    assert matcher.profile is False  # as it was made


def test_generated_frames_are_textured_and_seeded():
    a, b = load_frames(None, 3, (160, 120)), load_frames(None, 3, (160, 120))
    assert len(a) == 3 and a[0].shape == (120, 160) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].std() > 20


def test_load_frames_from_missing_folder(tmp_path):
    with pytest.raises(ImageReadError, match="no images"):
        load_frames(tmp_path, 2, (64, 48))


def pair_with(points1: list[list[float]]) -> PairMatch:
    f0 = Features(torch.tensor([[1.0, 1.0], [5.0, 5.0]]), torch.ones(2), torch.zeros(2, 4), (10, 10))
    f1 = Features(torch.tensor(points1), torch.ones(2), torch.zeros(2, 4), (10, 10))
    result = MatchResult(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.ones(2), torch.ones(2), torch.zeros(3, 3))
    return PairMatch(f0, f1, result)


def test_agreement_compares_positions_not_indices():
    exact = pair_with([[2.0, 2.0], [6.0, 6.0]])
    assert match_agreement(pair_with([[2.0, 2.0], [6.0, 6.0]]), exact) == (2, 2)
    assert match_agreement(pair_with([[2.0, 2.0], [9.0, 6.0]]), exact) == (1, 2)


def test_bench_command_prints_and_writes_json(weight_files, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "superglue_ros", "bench", "--superpoint-weights", str(weight_files["superpoint"]),
         "--superglue-weights", str(weight_files["superglue"]), "--resize", "160", "120", "--max-keypoints", "64",
         "--sinkhorn-iterations", "10", "--pairs", "2", "--warmup", "1", "--mode", "stream", "--precision", "bf16",
         "--agreement", "--cpu-load", "1", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "pairs/s" in done.stdout and "gnn" in done.stdout and "identical to exact" in done.stdout
    report = json.loads(out.read_text())
    assert report["schema_version"] == 3 and report["config"]["precision"] == "bf16"
    assert report["config"]["cpu_load"] == 1 and "cpu_load=1" in done.stdout
    assert set(report["stages_ms"]) == {"preprocess", "extract", "match", "gnn", "sinkhorn", "geometry"}
    assert report["pairs_per_second"] > 0 and 0.0 <= report["agreement_with_exact"] <= 1.0
    assert report["peak_rss_mb"] > 0 and report["speed_only"] is False and report["matches_mean"] >= 0
    assert "speed and memory only" not in done.stdout
    dispatch = report["dispatch_per_pair"]
    assert dispatch["operations"] > 100 and dispatch["syncs"] == sum(dispatch["sync_ops"].values())
    assert f"per pair: {dispatch['operations']} dispatched operations" in done.stdout


def test_bench_with_deterministic_weights_says_it_measured_speed_only(tmp_path):
    """No official weights and no model named: the official architecture with untrained weights, whose
    match count is no result."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "superglue_ros", "bench", "--weights-dir", str(tmp_path), "--resize", "160", "120",
         "--max-keypoints", "64", "--sinkhorn-iterations", "5", "--pairs", "1", "--warmup", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "measured: speed and memory only (deterministic weights" in done.stdout
    assert "matches per pair: not measured (deterministic weights)" in done.stdout
    report = json.loads(out.read_text())
    assert report["speed_only"] is True and report["matches_mean"] is None
    assert "deterministic weights" in report["config"]["model"]


def test_a_stream_pair_dispatches_fewer_operations_than_a_fresh_pair(weight_files):
    matcher = Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                      superglue={"sinkhorn_iterations": 3}, extractor={"max_keypoints": 32})
    frames = load_frames(None, 3, (96, 64))
    pair, stream = count_pair(matcher, frames, "pair"), count_pair(matcher, frames, "stream")
    # a stream pair extracts one frame (the other is cached), a fresh pair two (as one batch)
    assert stream.operations["aten::convolution"] > 0 and pair.operations["aten::convolution"] > 0
    assert stream.total_operations < pair.total_operations and stream.total_views < pair.total_views


def test_synchronizer_waits_for_cuda_devices_only():
    assert synchronizer(torch.device("cpu"))() is None
    assert synchronizer(torch.device("meta")) is synchronizer(torch.device("cpu"))
    for device in (torch.device("cuda"), torch.device("cuda", 1)):
        wait = synchronizer(device)
        assert isinstance(wait, functools.partial) and wait.func is torch.cuda.synchronize
        assert wait.args == (device,)  # the device that ran the work, not the current one


def test_timed_calls_are_bracketed_by_the_synchronizer():
    calls = []
    seconds = timed(lambda: calls.append("call"), lambda: calls.append("wait"))
    assert calls == ["wait", "call", "wait"] and seconds >= 0


# A stand-in with the reference's interface (its package layout, weight files beside the code, config dicts,
# list outputs), built on this package's models: it tests the side-by-side harness, not the reference.
STAND_IN_SUPERPOINT = '''
from pathlib import Path
import torch
from superglue_ros.models.superpoint import SuperPoint as Ours

class SuperPoint(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.model = Ours(max_keypoints=config["max_keypoints"])
        self.model.load_state_dict(torch.load(Path(__file__).parent / "weights/superpoint_v1.pth"))

    def forward(self, data):
        f = self.model.extract(data["image"][0, 0])
        return {"keypoints": [f.keypoints], "scores": [f.scores], "descriptors": [f.descriptors.T]}
'''
STAND_IN_SUPERGLUE = '''
from pathlib import Path
import torch
from superglue_ros.models.superglue import SuperGlue as Ours, pad_features
from superglue_ros.models.types import Features
from superglue_ros.models.optimal_transport import log_optimal_transport

class SuperGlue(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        self.model = Ours()
        self.model.load_state_dict(torch.load(Path(__file__).parent / "weights/superglue_indoor.pth"))
        self.bin_score = self.model.bin_score

    def forward(self, data):
        self.model.configure(sinkhorn_iterations=self.config["sinkhorn_iterations"])
        feats = [Features(data[f"keypoints{i}"][0], data[f"scores{i}"][0], data[f"descriptors{i}"][0].T,
                          tuple(data[f"image{i}"].shape[-2:])) for i in "01"]
        return self.model(*pad_features([feats[0]], "cpu")[:4], *pad_features([feats[1]], "cpu")[:4])
'''


@pytest.mark.parametrize("backend, stages", [("torch", {"superpoint", "gnn", "sinkhorn", "pair", "stream"}),
                                             ("fixed", {"superpoint", "superglue", "pair", "stream"})])
def test_side_by_side_harness_times_every_stage_interleaved(weight_files, tmp_path, backend, stages):
    """Every stage of this package against the reference; on the fixed backend its extraction from the 8-bit
    frame and its SuperGlue in one call (GNN and Sinkhorn are not separate there)."""
    models = tmp_path / "checkout" / "models"
    models.mkdir(parents=True)
    (models / "superpoint.py").write_text(STAND_IN_SUPERPOINT)
    (models / "superglue.py").write_text(STAND_IN_SUPERGLUE)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "checkout").rglob("*"))
    out = tmp_path / "side.json"
    done = subprocess.run(
        [sys.executable, "-m", "superglue_ros", "bench", "--reference", str(tmp_path / "checkout"),
         "--superpoint-weights", str(weight_files["superpoint"]), "--superglue-weights",
         str(weight_files["superglue"]), "--resize", "160", "120", "--max-keypoints", "64",
         "--sinkhorn-iterations", "5", "--pairs", "3", "--warmup", "1", "--backend", backend, "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["stages"]) == stages
    for stage, row in report["stages"].items():
        assert row["reference_ms"]["median"] > 0 and row["ours_ms"]["median"] > 0, stage
        assert row["ratio"]["min"] <= row["ratio"]["median"] <= row["ratio"]["max"]
    assert "reference / ours" in done.stdout and all(stage in done.stdout for stage in stages)
    counts = report["dispatch_per_call"]
    assert set(counts) == {"pair", "stream"} and set(counts["pair"]) == {"reference", "ours"}
    for stage in counts:  # the stand-in is built on this package's models, plus the harness' own work
        assert 0 < counts[stage]["ours"]["operations"] and 0 < counts[stage]["reference"]["operations"]
    assert counts["stream"]["ours"]["operations"] < counts["pair"]["ours"]["operations"]
    assert "ops/syncs" in done.stdout
    # the checkout is imported from a temporary copy: nothing is written into it (no weights, no __pycache__)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "checkout").rglob("*")) == before


def test_reference_that_is_not_a_checkout_is_refused(weight_files, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "superglue_ros", "bench", "--reference", str(tmp_path),
         "--superpoint-weights", str(weight_files["superpoint"]), "--superglue-weights",
         str(weight_files["superglue"]), "--resize", "160", "120", "--pairs", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2 and "not a checkout of magicleap/SuperGluePretrainedNetwork" in done.stderr
    assert "Traceback" not in done.stderr


def test_cameras_bench_reports_batched_and_one_by_one(weight_files, tmp_path):
    out = tmp_path / "cameras.json"
    done = subprocess.run(
        [sys.executable, "-m", "superglue_ros", "bench", "--cameras", "1", "3",
         "--superpoint-weights", str(weight_files["superpoint"]), "--superglue-weights",
         str(weight_files["superglue"]), "--resize", "160", "120", "--max-keypoints", "64",
         "--sinkhorn-iterations", "5", "--pairs", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["cameras"]
    assert [row["cameras"] for row in rows] == [1, 3]
    for row in rows:
        assert row["pairs_per_second_batched"] > 0 and row["pairs_per_second_one_by_one"] > 0
        assert row["ratio_min"] <= row["throughput_ratio"] <= row["ratio_max"]
        assert row["latency_ms_batched"] > 0


def test_bench_times_the_fixed_backend_and_counts_its_hot_section(weight_files, tmp_path):
    """The GPU path's benchmark runs on the CPU too: the section from upload to download is counted at the
    dispatcher, and every call of it ran eagerly (no CUDA here), counted as such."""
    out = tmp_path / "fixed.json"
    done = subprocess.run(
        [sys.executable, "-m", "superglue_ros", "bench", "--backend", "fixed", "--mode", "stream",
         "--superpoint-weights", str(weight_files["superpoint"]), "--superglue-weights", str(weight_files["superglue"]),
         "--resize", "160", "120", "--max-keypoints", "64", "--sinkhorn-iterations", "100", "--pairs", "2",
         "--warmup", "1", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["config"]["backend"] == "fixed" and report["pairs_per_second"] > 0
    hot = report["hot_section_per_pair"]
    assert hot["syncs"] == 0 and hot["host_built"] == 0 and 0 < hot["operations"] <= 400
    assert "upload to download per stream pair" in done.stdout
    # the 7 frames bench makes for 3 pairs give 6 stream pairs, each one extraction (the first of two frames)
    # and one match
    assert report["graphs"] == {"eager: inputs not on a CUDA device": 12}
