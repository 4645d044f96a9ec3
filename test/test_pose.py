"""Relative-pose scoring as the SuperGlue reference scores it: errors, AUC, epipolar precision, pair lists.

Values are checked by hand, the rotation handling against ``np.rot90`` and
projections, and a synthetic scene end to end.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from superglue_ros import metrics
from superglue_ros.eval.bagio import BagError, FrameError
from superglue_ros.eval.pairlist import PairListSource, parse_line, resized_size
from superglue_ros.eval.scoring import pose_scores
from superglue_ros.geometry.pose import (BAD_INTRINSICS, COLLINEAR_POINTS, EPIPOLAR_THRESHOLD, NO_MOTION,
                                         NON_FINITE_POINTS, SOLVER_FAILED, TOO_FEW_MATCHES, NoPose, epipolar_errors,
                                         estimate_relative_pose, inplane_rotation, pose_error_deg,
                                         quaternion_to_rotation, relative_pose, rotate_intrinsics,
                                         rotation_error_deg, scale_intrinsics, translation_error_deg)


def rz(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])


def rigid(rotation: np.ndarray, t) -> np.ndarray:
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = rotation, t
    return transform


def project(k: np.ndarray, transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    x = (points @ transform[:3, :3].T + transform[:3, 3]) @ k.T
    return x[:, :2] / x[:, 2:]


def line(k0, k1, transform, turns=(0, 0), names=("a.png", "b.png")) -> str:
    numbers = np.r_[k0.ravel(), k1.ravel(), transform.ravel()]
    return " ".join([*names, str(turns[0]), str(turns[1])] + [repr(float(v)) for v in numbers])


K_VGA = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
T_GOOD = rigid(rz(10), [1.0, 0.2, 0.1])


def test_rotation_and_translation_errors_by_hand():
    assert rotation_error_deg(rz(10), np.eye(3)) == pytest.approx(10.0, abs=1e-9)
    assert rotation_error_deg(rz(10), rz(-5)) == pytest.approx(15.0, abs=1e-9)
    t_true = np.array([1.0, 0, 0])
    assert translation_error_deg(np.array([-3.0, 0, 0]), t_true) == pytest.approx(0.0, abs=1e-9)
    at30 = np.array([math.cos(math.radians(30)), math.sin(math.radians(30)), 0])
    assert translation_error_deg(-at30, t_true) == pytest.approx(30.0, abs=1e-6)  # 150 degrees reads as 30
    assert translation_error_deg([1, 0, 0], [0, 3, 0]) == pytest.approx(90.0)
    assert math.isnan(translation_error_deg(at30, np.zeros(3)))
    assert pose_error_deg(rz(10), np.array([1.0, 1, 0]), np.eye(3), np.array([1.0, 0, 0])) == pytest.approx(45.0)
    assert pose_error_deg(None, None, np.eye(3), np.ones(3)) == math.inf


def test_relative_pose_and_quaternions():
    quarter_turn = quaternion_to_rotation(0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4))
    np.testing.assert_allclose(quarter_turn, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotation(0, 0, 0, 2.0), np.eye(3))
    r, t = relative_pose(np.eye(3), np.zeros(3), np.eye(3), np.array([1.0, 0, 0]))
    np.testing.assert_allclose(r @ np.array([1.0, 2, 3]) + t, [0, 2, 3])
    r0, t0 = quarter_turn, np.array([0.5, -1, 2])
    r1, t1 = quaternion_to_rotation(0.1, 0.2, 0.3, 0.9), np.array([1.0, 0, 1])
    world = np.array([3.0, 1, 4])
    r, t = relative_pose(r0, t0, r1, t1)
    np.testing.assert_allclose(r @ (r0.T @ (world - t0)) + t, r1.T @ (world - t1))


def test_pose_auc_by_hand():
    # sorted errors 0|1,3,8,inf with recall 0|.25,.5,.75,1: @5 (.125 + .75 + 1.0) / 5, @10 5.5/10, @20 13/20
    aucs = metrics.error_auc([8.0, math.inf, 1.0, 3.0], metrics.POSE_AUC_THRESHOLDS)
    assert list(aucs.values()) == pytest.approx([0.375, 0.55, 0.65], abs=1e-12)
    assert metrics.error_auc([5.0], [5.0])[5.0] == 0.0  # an error equal to the threshold does not count


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 100) | st.just(math.inf), min_size=1, max_size=30))
def test_pose_auc_bounded_monotone_order_free(errors):
    aucs = list(metrics.error_auc(errors, [1, 5, 10, 20, 50]).values())
    assert all(0.0 <= a <= 1.0 + 1e-12 for a in aucs)
    assert all(a <= b + 1e-12 for a, b in zip(aucs, aucs[1:]))
    assert list(metrics.error_auc(errors[::-1], [1, 5, 10, 20, 50]).values()) == aucs


def test_epipolar_error_by_hand():
    k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    sideways = rigid(np.eye(3), [1.0, 0, 0])  # epipolar lines are the image rows
    errors = epipolar_errors(np.array([[370.0, 340.0]] * 2), np.array([[570.0, 340.0], [570.0, 345.0]]), sideways, k, k)
    assert errors[0] == pytest.approx(0.0, abs=1e-18)
    assert errors[1] == pytest.approx(2 * 0.01 ** 2, rel=1e-9)  # 5 px = 0.01 off the line, in both images
    forward = rigid(np.eye(3), [0, 0, 2.0])  # lines through the principal point
    expected = 0.03 ** 2 + 0.003 ** 2 / 0.0909
    assert epipolar_errors(np.array([[370.0, 240.0]]), np.array([[470.0, 255.0]]), forward, k, k)[0] == \
        pytest.approx(expected, rel=1e-9)
    assert expected > EPIPOLAR_THRESHOLD


def test_resize_rules_of_the_reference():
    assert resized_size(1000, 750, (640, 480)) == (640, 480)
    assert resized_size(1000, 750, (640,)) == (640, 480)
    assert resized_size(1000, 750, (640, -1)) == (640, 480)
    assert resized_size(10, 5, (5,)) == (5, 2)  # Python's round: 2.5 -> 2
    assert resized_size(1000, 750, (-1,)) == (1000, 750)
    for bad in [(), (0,), (640, 480, 1), (-2,), (-1, 480)]:
        with pytest.raises(ValueError):
            resized_size(1000, 750, bad)
    k = scale_intrinsics(np.array([[1000.0, 0, 639.5], [0, 900.0, 479.5], [0, 0, 1]]), (2.0, 4.0))
    np.testing.assert_allclose(k, [[500, 0, 319.75], [0, 225, 119.875], [0, 0, 1]])


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_rotated_principal_point_follows_np_rot90(turns):
    width, height, x, y = 7, 4, 5, 1
    image = np.zeros((height, width))
    image[y, x] = 1
    row, column = np.argwhere(np.rot90(image, k=turns))[0]
    rotated = rotate_intrinsics(np.array([[1.0, 0, x], [0, 1.0, y], [0, 0, 1]]), width, height, turns)
    assert (rotated[0, 2], rotated[1, 2]) == (column, row)


def rot90_pixels(x: np.ndarray, width: int, height: int, turns: int) -> np.ndarray:
    """Where np.rot90(k=turns) moves pixel (x, y) of a width x height image."""
    for _ in range(turns):
        x, (width, height) = np.c_[x[:, 1], width - 1 - x[:, 0]], (height, width)
    return x


def write_images(folder: Path, sizes: tuple[tuple[int, int], ...], names=("a.png", "b.png")) -> None:
    rng = np.random.default_rng(0)
    for name, (width, height) in zip(names, sizes):
        cv2.imwrite(str(folder / name), (rng.random((height, width)) * 255).astype(np.uint8))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.integers(0, 3), st.sampled_from([(-1,), (640, 480), (800,)]))
def test_turned_ground_truth_keeps_projections(tmp_path_factory, turns0, turns1, resize):
    """Project 3D points with the original K and pose, turn the pixels as np.rot90 turns the image: they
    equal the projections with the turned K and pose, and lie on the turned pair's epipolar lines."""
    folder = tmp_path_factory.mktemp("turned")
    sizes = (1000, 750), (960, 720)  # isotropic resizes only (see the reference's scale swap)
    write_images(folder, sizes)
    k0 = np.array([[800.0, 0, 500], [0, 810.0, 370], [0, 0, 1]])
    k1 = np.array([[700.0, 0, 480], [0, 690.0, 390], [0, 0, 1]])
    (folder / "pairs.txt").write_text(line(k0, k1, T_GOOD) + "\n" + line(k0, k1, T_GOOD, (turns0, turns1)) + "\n")
    source = PairListSource(folder / "pairs.txt", folder, resize)
    (plain_images, plain), (images, turned) = (source.load(entry, None) for entry in source.entries)
    points = np.c_[np.random.default_rng(1).uniform(-1, 1, (50, 2)), np.random.default_rng(2).uniform(3, 6, 50)]
    x0 = rot90_pixels(project(plain.k0, np.eye(4), points), *resized_size(*sizes[0], resize), turns0)
    x1 = rot90_pixels(project(plain.k1, plain.t_0to1, points), *resized_size(*sizes[1], resize), turns1)
    camera0 = inplane_rotation(turns0)
    np.testing.assert_allclose(project(turned.k0, camera0, points), x0, atol=1e-9)
    np.testing.assert_allclose(project(turned.k1, turned.t_0to1 @ camera0, points), x1, atol=1e-9)
    assert np.max(epipolar_errors(x0, x1, turned.t_0to1, turned.k0, turned.k1)) < 1e-18
    np.testing.assert_array_equal(images[0], np.rot90(plain_images[0], k=turns0))
    assert images[1].shape == np.rot90(plain_images[1], k=turns1).shape


def test_pair_list_parsing(tmp_path):
    entry = parse_line(line(K_VGA, K_VGA, T_GOOD, (1, 3)), 1)
    assert (entry.name0, entry.name1, entry.rot0, entry.rot1) == ("a.png", "b.png", 1, 3)
    np.testing.assert_array_equal(entry.truth.t_0to1, T_GOOD)
    assert parse_line("x.jpg  y.jpg", 1).truth is None and parse_line("x y 1 2", 1).rot1 == 2
    good = line(K_VGA, K_VGA, T_GOOD).split()

    def changed(index: int, value: str) -> str:
        return " ".join(good[:index] + [value] + good[index + 1:])

    for text, message in [("a", "got 1"), ("a b 0", "got 3"), ("a b 4 0", "rot0"), ("a b 1.0 0", "rot0"),
                          (changed(4, "nan"), "non-finite"), (changed(8, "1,5"), "not a number"),
                          (changed(4, "0"), "K0 must be"), (changed(12, "2"), "K0 must be"),
                          (changed(37, "2"), "T_0to1 must be"), (" ".join(good[:-1]), "got 37")]:
        with pytest.raises(ValueError, match=f"line 12: .*{message}"):
            parse_line(text, 12)
    write_images(tmp_path, ((64, 48), (64, 48)))
    (tmp_path / "pairs.txt").write_text("# a comment\n\na.png b.png\nmissing.png b.png\n")
    source = PairListSource(tmp_path / "pairs.txt", tmp_path, (32, 24))
    assert [e.name0 for e in source.entries] == ["a.png", "missing.png"]
    images, truth = source.load(source.entries[0], None)
    assert truth is None and images[0].shape == (24, 32) and images[0].dtype == np.uint8
    with pytest.raises(FrameError, match="missing.png: no such file"):
        source.load(source.entries[1], None)
    (tmp_path / "bad.txt").write_text("a.png b.png 0\n")
    with pytest.raises(BagError, match="line 1"):
        PairListSource(tmp_path / "bad.txt", tmp_path, (32, 24))


def synthetic_matches(n: int, rng: np.random.Generator):
    points = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(4, 8, n)]
    kpts0 = np.r_[project(K_VGA, np.eye(4), points), rng.uniform([0, 0], [639, 479], (n // 2, 2))]
    order = rng.permutation(n)
    kpts1 = project(K_VGA, T_GOOD, points)[order]
    return kpts0, kpts1, np.r_[np.argsort(order), -np.ones(n // 2, int)]


def test_noise_free_scene_scores_perfectly():
    kpts0, kpts1, matches0 = synthetic_matches(200, np.random.default_rng(3))
    cv2.setRNGSeed(0)
    scores = pose_scores(kpts0, kpts1, matches0, K_VGA, K_VGA, T_GOOD)
    assert scores["error"] < 1.0 and scores["error"] == max(scores["rotation_error"], scores["translation_error"])
    assert scores["matches"] == scores["correct"] == 200 and scores["precision"] == 1.0
    assert scores["matching_score"] == pytest.approx(200 / 300)  # over all keypoints of image 0


def test_pose_rejects_outliers_and_needs_five_matches():
    rng = np.random.default_rng(4)
    points = np.c_[rng.uniform(-2, 2, (100, 2)), rng.uniform(4, 8, 100)]
    k0, k1 = project(K_VGA, np.eye(4), points), project(K_VGA, T_GOOD, points)
    k1[:20] = rng.uniform([0, 0], [639, 479], (20, 2))
    rotation, translation, inliers = estimate_relative_pose(k0, k1, K_VGA, K_VGA)
    assert inliers[20:].all() and inliers[:20].sum() <= 2
    assert rotation_error_deg(rotation, T_GOOD[:3, :3]) < 0.1 and np.linalg.norm(translation) == pytest.approx(1.0)
    assert estimate_relative_pose(k0[:4], k1[:4], K_VGA, K_VGA) == NoPose(TOO_FEW_MATCHES)
    kpts0, kpts1, matches0 = synthetic_matches(4, np.random.default_rng(5))
    scores = pose_scores(kpts0, kpts1, matches0, K_VGA, K_VGA, T_GOOD)
    assert scores["rotation_error"] == scores["translation_error"] == scores["error"] == math.inf
    assert scores["failure"] == TOO_FEW_MATCHES
    empty = pose_scores(np.zeros((0, 2)), kpts1, np.zeros(0, int), K_VGA, K_VGA, T_GOOD)
    assert (empty["precision"], empty["matching_score"], empty["correct"]) == (0.0, 0.0, 0)


def scene_matches(n: int = 100, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free matches of a 3D scene under T_GOOD, which any of the degenerate cases below spoils."""
    points = np.c_[np.random.default_rng(seed).uniform(-2, 2, (n, 2)), np.random.default_rng(seed + 1).uniform(4, 8, n)]
    return project(K_VGA, np.eye(4), points), project(K_VGA, T_GOOD, points)


def test_good_matches_give_a_pose_and_each_degenerate_case_a_reason():
    kpts0, kpts1 = scene_matches()
    assert isinstance(estimate_relative_pose(kpts0, kpts1, K_VGA, K_VGA), tuple)
    assert estimate_relative_pose(kpts0[:4], kpts1[:4], K_VGA, K_VGA) == NoPose(TOO_FEW_MATCHES)
    assert estimate_relative_pose(kpts0, kpts0, K_VGA, K_VGA) == NoPose(NO_MOTION)  # an image against itself
    barely = kpts0 + 0.3  # under the 1 px RANSAC threshold
    barely[:4] = kpts1[:4]  # four moving matches are not a minimal sample
    assert estimate_relative_pose(kpts0, barely, K_VGA, K_VGA) == NoPose(NO_MOTION)
    on_a_line = np.c_[np.linspace(10, 600, 100), np.linspace(20, 400, 100)]
    assert estimate_relative_pose(on_a_line, kpts1, K_VGA, K_VGA) == NoPose(COLLINEAR_POINTS)
    assert estimate_relative_pose(kpts0, np.repeat(kpts1[:1], 100, 0), K_VGA, K_VGA) == NoPose(COLLINEAR_POINTS)
    broken = kpts1.copy()
    broken[3] = np.nan
    assert estimate_relative_pose(kpts0, broken, K_VGA, K_VGA) == NoPose(NON_FINITE_POINTS)
    for k in (np.zeros((3, 3)), np.full((3, 3), np.nan), np.diag([500.0, -500.0, 1.0]), np.eye(4)):
        assert estimate_relative_pose(kpts0, kpts1, k, K_VGA) == NoPose(BAD_INTRINSICS)
        assert estimate_relative_pose(kpts0, kpts1, K_VGA, k) == NoPose(BAD_INTRINSICS)


def test_opencv_failing_on_mostly_static_matches_is_no_pose():
    """Half of the matches still, half moving: OpenCV 5.1's five-point solver raises on the samples of
    static points (earlier versions return a pose); either way the estimate returns."""
    kpts0, kpts1 = scene_matches()
    kpts1[:50] = kpts0[:50]
    normalised0, normalised1 = (kpts0 - K_VGA[:2, 2]) / np.diag(K_VGA)[:2], (kpts1 - K_VGA[:2, 2]) / np.diag(K_VGA)[:2]
    try:
        cv2.findEssentialMat(normalised0, normalised1, np.eye(3), method=cv2.RANSAC, prob=0.99999, threshold=0.002)
        raises = False
    except cv2.error:
        raises = True
    result = estimate_relative_pose(kpts0, kpts1, K_VGA, K_VGA)
    assert result == NoPose(SOLVER_FAILED) if raises else isinstance(result, tuple)
    scores = pose_scores(kpts0, kpts1, np.arange(100), K_VGA, K_VGA, T_GOOD)
    assert scores["failure"] == (SOLVER_FAILED if raises else None)


def test_pose_scores_without_usable_intrinsics_count_nothing_correct():
    kpts0, kpts1 = scene_matches()
    with np.errstate(all="raise"):  # no division by a zero focal length either
        scores = pose_scores(kpts0, kpts1, np.arange(100), np.zeros((3, 3)), K_VGA, T_GOOD)
    assert scores["failure"] == BAD_INTRINSICS and scores["error"] == math.inf
    assert (scores["correct"], scores["precision"], scores["matches"]) == (0, 0.0, 100)


def test_real_stereo_pairs_have_a_consistent_ground_truth(tmp_path):
    """The assembled real pairs: the chessboard corners of the undistorted views satisfy the calibrated
    rig's epipolar geometry, and every line parses."""
    from superglue_ros.data.real_pairs import OPENCV_DATA, corners, write_real_pairs

    if not (OPENCV_DATA / "left01.jpg").is_file():
        pytest.skip("opencv-doc is not installed (apt-get install opencv-doc); .ci/run installs it")
    path, missing = write_real_pairs(tmp_path)
    entries = [parse_line(line, number) for number, line in enumerate(path.read_text().splitlines(), 1)]
    assert len(entries) >= 14 and all(entry.truth is not None for entry in entries)
    board = next(entry for entry in entries if entry.name0.startswith("chessboard"))
    image0, image1 = (cv2.imread(str(tmp_path / name), cv2.IMREAD_GRAYSCALE) for name in (board.name0, board.name1))
    points0, points1 = corners(image0), corners(image1)
    errors = epipolar_errors(points0.reshape(-1, 2), points1.reshape(-1, 2), board.truth.t_0to1, board.truth.k0,
                             board.truth.k1)
    assert np.median(errors) < EPIPOLAR_THRESHOLD / 10
