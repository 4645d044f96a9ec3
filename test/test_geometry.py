"""Robust homography on injected correspondences: recovery, outliers, and every invalid case."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from superglue_ros.geometry.homography import degeneracy, estimate_homography, project, weighted_dlt

H_TRUE = np.array([[0.9, 0.08, 30.0], [-0.05, 1.1, -12.0], [1e-4, -5e-5, 1.0]])


def correspondences(count: int, outliers: int = 0, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    points0 = rng.uniform([0, 0], [640, 480], size=(count, 2))
    points1 = project(H_TRUE, points0) + rng.normal(0, noise, size=(count, 2))
    points1[:outliers] = rng.uniform([0, 0], [640, 480], size=(outliers, 2))
    return points0, points1


def corner_error(h: np.ndarray) -> float:
    corners = np.array([[0, 0], [639, 0], [639, 479], [0, 479]], dtype=float)
    return float(np.linalg.norm(project(h, corners) - project(H_TRUE, corners), axis=1).mean())


@pytest.mark.parametrize("method", ["ransac", "usac_magsac", "lmeds", "usac_default"])
def test_recovers_a_known_warp_despite_outliers(method):
    points0, points1 = correspondences(200, outliers=40, noise=0.3)
    estimate = estimate_homography(points0, points1, method=method, threshold=3.0)
    assert estimate.valid and estimate.reason == ""
    assert corner_error(estimate.h) < 0.5
    assert estimate.num_matches == 200 and 150 <= estimate.num_inliers <= 165
    assert not estimate.inliers[:40].any() or estimate.inliers[:40].sum() <= 3
    assert estimate.inlier_ratio == pytest.approx(estimate.num_inliers / 200)


@pytest.mark.parametrize("method", ["ransac", "lmeds"])
def test_the_estimate_is_fitted_to_all_inliers_not_the_best_minimal_sample(method):
    """RANSAC's own model here is 0.72 px off at the corners; a fit over every inlier is under 0.5."""
    points0, points1 = correspondences(120, outliers=20, noise=1.0, seed=3)
    estimate = estimate_homography(points0, points1, method=method, threshold=3.0)
    assert estimate.valid
    assert corner_error(estimate.h) < 0.5


def test_imprecise_inliers_weigh_less_than_precise_ones():
    """Inliers 2-2.9 px off, all pulled one way, bias a plain least-squares fit; the refit resists them."""
    points0, points1 = correspondences(200, outliers=20, noise=0.2, seed=5)
    rng = np.random.default_rng(6)
    points1[20:60] += rng.uniform(2.0, 2.9, size=(40, 1)) * np.array([0.6, 0.8])
    estimate = estimate_homography(points0, points1, threshold=3.0)
    assert estimate.valid and estimate.inliers[20:60].sum() >= 35
    plain, _ = cv2.findHomography(points0[estimate.inliers], points1[estimate.inliers], 0)
    assert corner_error(estimate.h) < 0.4 * corner_error(plain)


def test_exact_correspondences_give_the_exact_homography():
    points0, points1 = correspondences(50)
    estimate = estimate_homography(points0, points1)
    np.testing.assert_allclose(estimate.h, H_TRUE, rtol=1e-7, atol=1e-9)


def test_weighted_dlt_ignores_zero_weight_points():
    points0, points1 = correspondences(30, outliers=10, seed=2)
    weights = np.r_[np.zeros(10), np.ones(20)]
    np.testing.assert_allclose(weighted_dlt(points0, points1, weights), H_TRUE, rtol=1e-7, atol=1e-9)


def test_too_few_matches_is_invalid_with_identity():
    points0, points1 = correspondences(5)
    estimate = estimate_homography(points0, points1, min_matches=8)
    assert not estimate.valid and "too few matches (5 < min_matches=8)" in estimate.reason
    assert np.array_equal(estimate.h, np.eye(3)) and estimate.num_inliers == 0 and estimate.inliers.shape == (5,)


def test_pure_noise_is_invalid():
    rng = np.random.default_rng(1)
    estimate = estimate_homography(rng.uniform(0, 640, (60, 2)), rng.uniform(0, 640, (60, 2)), min_matches=15)
    assert not estimate.valid and estimate.reason


def test_collinear_points_are_invalid():
    xs = np.linspace(0, 600, 30)
    points0 = np.stack([xs, 2 * xs + 5], axis=1)
    estimate = estimate_homography(points0, points0 + 3.0)
    assert not estimate.valid and estimate.reason


def test_mirror_image_is_flagged_degenerate():
    mirror = np.array([[-1.0, 0, 640], [0, 1, 0], [0, 0, 1]])
    assert "flips orientation" in degeneracy(mirror)
    assert "not finite" in degeneracy(np.full((3, 3), np.nan))
    assert degeneracy(H_TRUE) == ""


def test_bad_arguments_name_the_parameter():
    points0, points1 = correspondences(10)
    with pytest.raises(ValueError, match="method"):
        estimate_homography(points0, points1, method="magic")
    with pytest.raises(ValueError, match="min_matches"):
        estimate_homography(points0, points1, min_matches=3)
    with pytest.raises(ValueError, match="same shape"):
        estimate_homography(points0, points1[:5])


def test_points_sent_behind_infinity_project_to_nan() -> None:
    """w <= 0 has no image: NaN, so such points neither match nor score as a finite corner error."""
    h = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.01, 0.0, 1.0]])  # w = 1 - x / 100
    projected = project(h, np.array([[50.0, 10.0], [100.0, 0.0], [300.0, 5.0]]))
    np.testing.assert_allclose(projected[0], [100.0, 20.0])
    assert np.isnan(projected[1:]).all()


@pytest.mark.parametrize("method", ["ransac", "lmeds", "usac_magsac"])
def test_num_inliers_are_the_matches_within_the_threshold_for_every_method(method):
    """LMedS's own mask uses its own threshold: every method's inliers are recounted from the final H."""
    from superglue_ros.geometry.homography import estimate_homography, project

    rng = np.random.default_rng(11)
    points0 = rng.uniform(0, 640, (200, 2))
    h_true = np.array([[1.02, 0.01, 5.0], [-0.01, 0.99, -3.0], [1e-5, 0.0, 1.0]])
    points1 = project(h_true, points0) + rng.normal(0, 1.5, (200, 2))
    points1[:40] += rng.uniform(-60, 60, (40, 2))
    estimate = estimate_homography(points0, points1, method=method, threshold=3.0)
    within = np.linalg.norm(project(estimate.h, points0) - points1, axis=1) <= 3.0
    assert estimate.valid and estimate.num_inliers == int(within.sum())
    np.testing.assert_array_equal(estimate.inliers, within)
