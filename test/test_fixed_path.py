"""The fixed-shape, synchronisation-free path (the one a GPU replays as a graph) against the exact path.

Its arithmetic runs on the CPU here: the keypoints must be the exact path's,
the matches those of the exact path within the golden tolerances, and one
stream pair of the Matcher's fixed backend (SuperPoint on the new image,
SuperGlue against the cached previous one, match extraction) must dispatch a
bounded number of operations and no host synchronisation, counted at the
dispatcher.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from superglue_ros import Features, SuperGlue, SuperPoint
from superglue_ros.inference.dispatch_count import DispatchCounter
from superglue_ros.inference.matcher import Matcher
from superglue_ros.models.fixed_keypoints import FixedKeypoints, extract_fixed, fixed_keypoints, pool_2x2
from superglue_ros.models.fixed_superglue import FixedMatches, FixedSuperGlue
from superglue_ros.models.sinkhorn_op import log_transport, torch_log_transport
from superglue_ros.models.superpoint import extract_with, max_pool_nms, sample_descriptors, select_keypoints

from conftest import GOLDEN, require, rule_weights
from test_golden import tied_keypoints

SYNTHETIC = GOLDEN / "synthetic"
MAX_OPS_PER_STREAM_PAIR = 400


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    data = np.load(require(SYNTHETIC / "reference.npz"))
    return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads(require(SYNTHETIC / "meta.json").read_text())


def exact_keypoints(logits: torch.Tensor, dense: torch.Tensor, config: dict) -> Features:
    heat = max_pool_nms(SuperPoint.heatmap(logits), config["nms_radius"])
    keypoints, scores = select_keypoints(heat[0], config["keypoint_threshold"], config["remove_borders"],
                                         config["max_keypoints"])
    return Features(keypoints, scores, sample_descriptors(keypoints, dense), (0, 0))


def assert_same_keypoints(fixed: FixedKeypoints, exact: Features, image: int = 0, tolerance: float = 0.0) -> None:
    """The valid slots are the exact keypoints in the exact order, their scores and descriptors bit for bit
    (or within ``tolerance``); the rest are invalid, score 0."""
    n = len(exact)
    assert int(fixed.valid[image].sum()) == n and bool(fixed.valid[image, :n].all())
    assert torch.equal(fixed.keypoints[image, :n], exact.keypoints)
    assert torch.allclose(fixed.scores[image, :n], exact.scores, rtol=0, atol=tolerance)
    assert torch.allclose(fixed.descriptors[image, :n], exact.descriptors, rtol=0, atol=tolerance)
    assert not fixed.scores[image, n:].any()


@pytest.mark.parametrize("budget", [300, 1024, 100_000])
def test_fixed_keypoints_are_the_exact_ones_on_the_golden_images(synthetic, meta, budget):
    """Top-k order when the budget cuts (300, 1024 of ~5150 candidates), raster order when all fit."""
    superpoint = SuperPoint(**meta["superpoint_config"]).eval()
    superpoint.load_state_dict(torch.load(SYNTHETIC / "superpoint.pth"), strict=True)
    config = dict(superpoint.config, max_keypoints=min(budget, 480 * 640))
    with torch.inference_mode():
        for i in (0, 1):
            logits, dense = superpoint(torch.from_numpy(synthetic[f"image{i}"])[None, None])
            assert_same_keypoints(fixed_keypoints(logits, dense, config), exact_keypoints(logits, dense, config))


@pytest.mark.parametrize("size, budget, border, radius",
                         [((61, 83), 50, 4, 4), ((61, 83), 400, 0, 2), ((8, 8), 64, 1, 0), ((96, 64), 2000, 30, 3)])
def test_fixed_keypoints_on_generated_images(size, budget, border, radius):
    """Sizes that are not multiples of 8, budgets above and below the survivors, no border, a border that
    leaves nothing, no NMS."""
    superpoint = SuperPoint(max_keypoints=budget, remove_borders=border, nms_radius=radius,
                            keypoint_threshold=0.001).eval()
    superpoint.load_state_dict(rule_weights(superpoint), strict=True)
    images = torch.stack([torch.from_numpy(textured(*size, seed=sum(size) + i)) for i in range(2)])
    images = images.float()[:, None] / 255
    with torch.inference_mode():
        fixed = extract_fixed(superpoint, images)  # a batch: each image's own keypoints
        assert fixed.keypoints.shape == (2, budget, 2) and fixed.valid.shape == (2, budget)
        logits, dense = superpoint.forward_pooled(images, pool_2x2)  # the same heads, bit for bit
        for i in range(2):
            # a softmax over a batch may round the last bit differently from one over a single image
            exact = exact_keypoints(logits[i:i + 1], dense[i:i + 1], superpoint.config)
            assert_same_keypoints(fixed, exact, i, tolerance=1e-6)


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 image with blobs and edges at several scales (plenty of keypoints), no third-party data."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.float32)
    for sigma in (1.0, 3.0, 8.0):
        image += cv2.GaussianBlur(rng.normal(size=(height, width)).astype(np.float32), (0, 0), sigma) * sigma
    image = (image - image.min()) / (image.max() - image.min() + 1e-9)
    return (255 * image).astype(np.uint8)


def padded(features: Features, slots: int) -> tuple[torch.Tensor, ...]:
    """(1, slots, ...) keypoints, scores, descriptors, valid of Features, zeros in the padding."""
    n = len(features)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros((slots - n, *t.shape[1:]))])[None]

    return (pad(features.keypoints), pad(features.scores), pad(features.descriptors),
            (torch.arange(slots) < n)[None])


def assert_matches_exact(fixed: FixedMatches, expected: dict[str, np.ndarray], lengths: tuple[int, int],
                         score_tolerance: float = 1e-5) -> None:
    """log assignment within 1e-4 on the real rows/columns, matches and scores equal except at exact ties
    of the expected plan (at most 1%), nothing matched in the padding."""
    n, m = lengths
    plan = fixed.log_assignment[0]
    rows = torch.cat([torch.arange(n), torch.tensor([plan.shape[0] - 1])])
    cols = torch.cat([torch.arange(m), torch.tensor([plan.shape[1] - 1])])
    assert np.abs(plan[rows][:, cols].numpy() - expected["log_assignment"]).max() <= 1e-4
    assert not torch.isfinite(plan[n:-1]).any() and not torch.isfinite(plan[:, m:-1]).any()
    tied = tied_keypoints(expected["log_assignment"], 1e-5)
    for i, (matches, scores, length) in enumerate(((fixed.matches0, fixed.matching_scores0, n),
                                                  (fixed.matches1, fixed.matching_scores1, m))):
        assert (matches[0, length:] == -1).all() and not scores[0, length:].any()
        differs = ((matches[0, :length].numpy() != expected[f"matches{i}"])
                   | (np.abs(scores[0, :length].numpy() - expected[f"matching_scores{i}"]) > score_tolerance))
        assert not (differs & ~tied[i]).any(), f"image {i}: keypoints {np.flatnonzero(differs & ~tied[i])} differ"
        assert differs.sum() <= 0.01 * differs.size


def golden_features(data: dict[str, np.ndarray], i: int) -> Features:
    return Features(torch.from_numpy(data[f"keypoints{i}"]), torch.from_numpy(data[f"scores{i}"]),
                    torch.from_numpy(data[f"descriptors{i}"]).T.contiguous(), (480, 640))


def test_fixed_superglue_meets_the_golden_tolerances_with_padding(synthetic, meta):
    """The stage-by-stage golden pair, padded to 1100 slots: the padding changes nothing."""
    config = {key: value for key, value in meta["superglue_config"].items() if key != "weights"}
    superglue = SuperGlue(**config).eval()
    superglue.load_state_dict(torch.load(SYNTHETIC / "superglue.pth"), strict=True)
    f0, f1 = golden_features(synthetic, 0), golden_features(synthetic, 1)
    fixed = FixedSuperGlue(superglue)(*padded(f0, 1100), *padded(f1, 1100), (480, 640))
    assert fixed.matches0.shape == (1, 1100) and fixed.log_assignment.shape == (1, 1101, 1101)
    assert_matches_exact(fixed, synthetic, (len(f0), len(f1)))


@pytest.mark.parametrize("threshold", ["020", "000"])
def test_fixed_superglue_on_the_real_golden_pair(threshold):
    data = np.load(require(GOLDEN / "freiburg_pair.npz"))
    expected = {"log_assignment": data["log_assignment"],
                **{f"{key}{i}": data[f"{key}{i}_thr{threshold}"] for key in ("matches", "matching_scores")
                   for i in (0, 1)}}
    superglue = SuperGlue(match_threshold=int(threshold) / 100).eval()
    superglue.load_state_dict(rule_weights(superglue), strict=True)
    f0, f1 = golden_features(data, 0), golden_features(data, 1)
    fixed = FixedSuperGlue(superglue)(*padded(f0, 1024), *padded(f1, 1024), (480, 640))
    assert_matches_exact(fixed, expected, (len(f0), len(f1)))


def test_an_image_without_keypoints_matches_nothing():
    superglue = SuperGlue().eval()
    superglue.load_state_dict(rule_weights(superglue), strict=True)
    generator = torch.Generator().manual_seed(3)
    features = Features(torch.rand(40, 2, generator=generator) * 100, torch.rand(40, generator=generator),
                        torch.nn.functional.normalize(torch.randn(40, 256, generator=generator), dim=1), (100, 100))
    empty = Features.empty((100, 100), 256)
    fixed = FixedSuperGlue(superglue)(*padded(features, 64), *padded(empty, 64), (100, 100))
    assert (fixed.matches0 == -1).all() and (fixed.matches1 == -1).all()
    assert torch.isfinite(fixed.matching_scores0).all() and not fixed.matching_scores0.any()


def test_transport_is_one_operation_and_the_reference_iterations():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 30, 20, generator=generator) * 3
    valid0, valid1 = torch.ones(2, 30, dtype=torch.bool), torch.ones(2, 20, dtype=torch.bool)
    valid0[1, 25:] = False
    valid1[1, ::4] = False
    bin_score = torch.tensor(0.5)
    with DispatchCounter() as counter:
        plan = log_transport(scores, bin_score, valid0, valid1, 50)
    assert dict(counter.counts.operations) == {"superglue_ros::log_transport": 1}
    # the reference's loop, written out: rows then columns, from zero potentials
    couplings = torch.cat([torch.cat([scores, bin_score.expand(2, 30, 1)], 2), bin_score.expand(2, 1, 21)], 1)
    n, m = valid0.sum(1).float(), valid1.sum(1).float()
    norm = -(n + m).log()
    log_mu = torch.cat([torch.where(valid0, norm[:, None], -np.inf), (m.log() + norm)[:, None]], 1)
    log_nu = torch.cat([torch.where(valid1, norm[:, None], -np.inf), (n.log() + norm)[:, None]], 1)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(50):
        u = log_mu - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(couplings + u[:, :, None], dim=1)
    expected = couplings + u[:, :, None] + v[:, None, :] - norm[:, None, None]
    assert torch.equal(torch.isfinite(plan), torch.isfinite(expected))
    assert (plan - expected)[torch.isfinite(expected)].abs().max() <= 1e-5


INTERPRETED = """
import sys
import torch
from superglue_ros.models.sinkhorn_triton import triton_log_transport
inputs = torch.load(sys.argv[1])
torch.save(triton_log_transport(*inputs), sys.argv[2])
"""


def interpreted_triton(tmp_path: Path, *inputs: object) -> torch.Tensor:
    """``triton_log_transport(*inputs)`` under Triton's CPU interpreter, in a fresh process: the switch is read
    when Triton is first imported, which in this process may already have happened without it."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install triton): the CUDA kernel's arithmetic is untested")
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", INTERPRETED, str(tmp_path / "inputs.pt"), str(tmp_path / "plan.pt")],
                   env=env, check=True, timeout=900)
    return torch.load(tmp_path / "plan.pt")


@pytest.mark.parametrize("iterations, blocks, layout", [(100, (128, 128), "fused"), (4, (16, 32), "fused"),
                                                        (4, (16, 32), "tiled")])
def test_triton_kernel_equals_the_log_domain_iterations(tmp_path, iterations, blocks, layout):
    """All iterations with one tile per sweep, and a few with tiles that leave remainders, padded pairs, in
    one launch and in a launch per half-iteration."""
    generator = torch.Generator().manual_seed(1)
    batch = 1 if iterations == 100 else 2
    scores = torch.randn(batch, 65, 97, generator=generator) * 3
    valid0, valid1 = torch.ones(batch, 65, dtype=torch.bool), torch.ones(batch, 97, dtype=torch.bool)
    valid0[-1, 50:] = False
    valid1[-1, ::3] = False
    bin_score = torch.tensor(1.0)
    plan = interpreted_triton(tmp_path, scores, bin_score, valid0, valid1, iterations, *blocks, layout)
    expected = torch_log_transport(scores, bin_score, valid0, valid1, iterations)
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isfinite(plan), finite) and torch.equal(plan[~finite], expected[~finite])
    assert (plan - expected)[finite].abs().max() <= 1e-4


def stream_frames() -> tuple[np.ndarray, np.ndarray]:
    """Two 640x480 grey frames of one generated scene, the second turned and scaled a little."""
    frame0 = textured(480, 640, seed=0)
    frame1 = cv2.warpAffine(frame0, cv2.getRotationMatrix2D((320, 240), 4.0, 1.02), (640, 480),
                            borderMode=cv2.BORDER_REFLECT)
    return frame0, frame1


def test_one_stream_pair_is_few_operations_no_sync_and_exact(weight_files):
    """The fixed backend's hot section for one frame of a stream -- what the Matcher runs between the upload of
    the 8-bit frame and the download: the frame made the network's input, SuperPoint on it, SuperGlue against
    the previous frame's cached slots (100 Sinkhorn iterations), match extraction -- at 640x480 with 1024
    keypoints and the official architecture (rule weights)."""
    matcher = Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                      backend="fixed", extractor={"max_keypoints": 1024})
    fixed = matcher.fixed
    frame0, frame1 = stream_frames()
    previous = fixed.extract(fixed.upload(frame0))
    uploaded = fixed.upload(frame1)
    with DispatchCounter() as counter:
        current = fixed.extract(uploaded)
        matched = fixed.match(previous, current, (480, 640))
    counts = counter.counts
    print(f"per stream pair: {counts.as_dict()}")
    assert counts.total_syncs == 0 and counts.total_host_built == 0, counts.as_dict()
    assert counts.total_operations <= MAX_OPS_PER_STREAM_PAIR, counts.operations.most_common()
    assert counts.operations["superglue_ros::log_transport"] == 1

    superpoint, superglue = matcher.extractor, matcher.superglue
    images = [torch.from_numpy(f).float() / 255 for f in (frame0, frame1)]
    # The reference's arithmetic: SuperPoint's torch forward (the exact backend's one-thread oneDNN path may
    # round a score's last bit differently; test_matcher_fixed compares against it with that tolerance).
    with torch.inference_mode():
        exact0, exact1 = (extract_with(superpoint, image, superpoint.config) for image in images)
    assert_same_keypoints(previous, exact0)
    assert_same_keypoints(current, exact1)
    result = superglue.match(exact0, exact1)
    expected = {"log_assignment": result.log_assignment.numpy(), "matches0": result.matches0.numpy(),
                "matches1": result.matches1.numpy(), "matching_scores0": result.matching_scores0.numpy(),
                "matching_scores1": result.matching_scores1.numpy()}
    assert_matches_exact(matched, expected, (len(exact0), len(exact1)))


def test_a_stream_through_the_fixed_backend_matches_as_the_exact_one_does(weight_files, freiburg_frames):
    """Real frames resized on the device: the points the fixed backend reports (original pixels) are the
    exact backend's matches, but for keypoints that the device's and OpenCV's bilinear resizing (equal to float
    rounding) rank differently."""
    settings = dict(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                    resize=(320, 240), extractor={"max_keypoints": 256},
                    superglue={"match_threshold": 0.0})  # rule weights are untrained: every mutual match
    exact, fixed = Matcher(**settings), Matcher(backend="fixed", **settings)
    frames = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in freiburg_frames[:3]]
    found, expected = 0, 0
    for i, (frame0, frame1) in enumerate(zip(frames, frames[1:])):
        streamed = fixed.match(frame0, frame1, i, i + 1)
        reference = exact.match(frame0, frame1, i, i + 1)
        ours = {tuple(np.round(np.concatenate(p), 1)) for p in zip(*streamed.matched_points()[:2])}
        theirs = {tuple(np.round(np.concatenate(p), 1)) for p in zip(*reference.matched_points()[:2])}
        found, expected = found + len(ours & theirs), expected + len(theirs)
    assert expected >= 10 and found >= 0.9 * expected, (found, expected)


def test_bf16_gnn_keeps_the_exact_matches_on_real_frames(freiburg_frames):
    """Fast mode's promise with trained weights (the bundled SIFT model): at least 98% of the exact float32
    matches of real frame pairs are found again with the GNN in bf16."""
    from superglue_ros.inference.model_files import load_open_model
    sift, superglue, _ = load_open_model("sift_open")
    fast = FixedSuperGlue(superglue, torch.bfloat16)
    found = total = 0
    for i in (0, 5, 10):
        images = [cv2.imread(str(freiburg_frames[j]), cv2.IMREAD_GRAYSCALE) for j in (i, i + 2)]
        f0, f1 = (sift.extract(image) for image in images)
        slots = max(len(f0), len(f1))
        exact = superglue.match(f0, f1)
        fixed = fast(*padded(f0, slots), *padded(f1, slots), images[0].shape,
                     padded_frames(f0, slots), padded_frames(f1, slots))
        matched = exact.matches0 >= 0
        found += int((fixed.matches0[0, :len(f0)] == exact.matches0)[matched].sum())
        total += int(matched.sum())
    assert total > 300 and found >= 0.98 * total, f"bf16 found {found} of {total} exact matches"


def padded_frames(features: Features, slots: int) -> torch.Tensor:
    frames = features.scale_orientation
    return torch.cat([frames, frames.new_zeros((slots - len(frames), 2))])[None]
