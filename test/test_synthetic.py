"""Random homographies, warping and ground-truth labels for self-supervised pairs."""
from __future__ import annotations

import numpy as np
import pytest

from superglue_ros.geometry.homography import project
from superglue_ros.data.homographies import ground_truth_matches, sample_homography, warp_image


def test_homography_keeps_the_image_mostly_in_frame() -> None:
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [639, 0], [639, 479], [0, 479]], dtype=np.float64)
    for _ in range(200):
        h = sample_homography(rng, 480, 640)
        assert h.shape == (3, 3) and h.dtype == np.float64 and h[2, 2] == pytest.approx(1.0)
        centre = project(h, corners).mean(axis=0)
        assert 160 - 1e-6 <= centre[0] <= 480 + 1e-6 and 120 - 1e-6 <= centre[1] <= 360 + 1e-6
        assert np.linalg.det(h[:2, :2]) > 0  # no mirror images


def test_strength_zero_is_identity_and_strength_scales_the_warp() -> None:
    assert np.allclose(sample_homography(np.random.default_rng(1), 100, 200, strength=0.0), np.eye(3))
    corners = np.array([[0, 0], [199, 0], [199, 99], [0, 99]], dtype=np.float64)

    def mean_shift(strength: float) -> float:
        rng = np.random.default_rng(2)
        return float(np.mean([np.linalg.norm(project(sample_homography(rng, 100, 200, strength), corners)
                                             - corners, axis=1).mean() for _ in range(100)]))

    assert mean_shift(0.2) < mean_shift(1.0)


def test_sampling_is_seeded() -> None:
    a = sample_homography(np.random.default_rng(7), 240, 320)
    b = sample_homography(np.random.default_rng(7), 240, 320)
    assert np.array_equal(a, b)


def test_warp_moves_content_where_the_homography_says() -> None:
    image = np.zeros((120, 160), dtype=np.uint8)
    image[40:44, 60:64] = 255
    h = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, -5.0], [0.0, 0.0, 1.0]])
    warped = warp_image(image, h)
    assert warped.shape == image.shape and warped.dtype == np.uint8
    assert warped[35:39, 70:74].min() == 255 and warped[40:44, 60:64].max() == 0


def test_photometric_augmentation_changes_intensities_only_with_an_rng() -> None:
    image = np.random.default_rng(3).integers(0, 256, (60, 80), dtype=np.uint8)
    assert np.array_equal(warp_image(image, np.eye(3)), image)
    noisy = warp_image(image, np.eye(3), np.random.default_rng(4))
    assert noisy.shape == image.shape and not np.array_equal(noisy, image)
    assert np.array_equal(noisy, warp_image(image, np.eye(3), np.random.default_rng(4)))
    assert np.array_equal(warp_image(image, np.eye(3), np.random.default_rng(4), photometric=False), image)


def test_ground_truth_on_a_known_translation() -> None:
    h = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    keypoints0 = np.array([[0, 0], [50, 50], [100, 0], [200, 200]], dtype=np.float64)
    keypoints1 = np.array([
        [61, 50],     # 1 px from keypoint 1 -> match
        [10, 2],      # 2 px from keypoint 0 -> match
        [114, 0],     # 4 px from keypoint 2 -> ignored (between 3 and 5 px)
        [500, 500],   # far from everything -> unmatched
    ], dtype=np.float64)
    matches0, matches1 = ground_truth_matches(keypoints0, keypoints1, h)
    assert matches0.dtype == np.int64 and matches1.dtype == np.int64
    assert matches0.tolist() == [1, 0, -2, -1]
    assert matches1.tolist() == [1, 0, -2, -1]


def test_ground_truth_needs_mutual_nearest_neighbours() -> None:
    keypoints0 = np.array([[10.0, 10.0], [11.0, 10.0]])
    keypoints1 = np.array([[11.2, 10.0]])
    matches0, matches1 = ground_truth_matches(keypoints0, keypoints1, np.eye(3))
    assert matches0.tolist() == [-2, 0]  # keypoint 0 is close but keypoint 1 is closer
    assert matches1.tolist() == [1]


def test_ground_truth_is_consistent_under_a_random_warp() -> None:
    rng = np.random.default_rng(5)
    h = sample_homography(rng, 240, 320)
    keypoints0 = rng.uniform([0, 0], [320, 240], size=(300, 2))
    visible = project(h, keypoints0)
    keypoints1 = np.concatenate([visible[:200] + rng.normal(0, 0.5, (200, 2)), rng.uniform(0, 320, (50, 2))])
    matches0, matches1 = ground_truth_matches(keypoints0, keypoints1, h)
    for i, j in enumerate(matches0):
        if j >= 0:
            assert matches1[j] == i
    assert (matches0[:200] >= 0).mean() > 0.8
    assert (matches0[200:] >= 0).mean() < 0.1


def test_ground_truth_with_no_keypoints() -> None:
    matches0, matches1 = ground_truth_matches(np.zeros((0, 2)), np.ones((3, 2)), np.eye(3))
    assert matches0.shape == (0,) and matches1.tolist() == [-1, -1, -1]
