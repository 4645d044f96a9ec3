"""Metric functions against answers worked out by hand, and the homography chain on a known warp."""
from __future__ import annotations

import math

import numpy as np
import pytest

from superglue_ros import metrics as metrics
from superglue_ros.geometry.homography import estimate_homography, project
from superglue_ros.data.homographies import sample_homography


def test_match_counts_small_case() -> None:
    # keypoint: 0 correct; 1 wrong partner; 2 missed; 3 ambiguous truth (prediction not counted); 4 false match
    matches0 = np.array([1, 0, -1, 2, 3])
    gt_matches0 = np.array([1, 2, 0, -2, -1])
    correct, scored, positives = metrics.match_counts(matches0, gt_matches0)
    assert (correct, scored, positives) == (1, 3, 3)  # precision 1/3, recall 1/3


def test_match_counts_perfect_and_undefined() -> None:
    assert metrics.match_counts(np.array([2, -1, 0]), np.array([2, -1, 0])) == (2, 2, 2)
    assert metrics.match_counts(np.array([-1, -1]), np.array([-1, -1])) == (0, 0, 0)
    assert math.isnan(metrics.ratio_or_nan(0, 0)) and metrics.ratio_or_nan(1, 4) == 0.25
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.match_counts(np.array([1]), np.array([1, 2]))


def test_counts_by_confidence_by_hand() -> None:
    # keypoint: 0 correct at 0.95; 1 wrong at 0.5; 2 unmatched; 3 ambiguous truth; 4 correct at exactly 1.0
    matches0 = np.array([1, 0, -1, 2, 3])
    confidences0 = np.array([0.95, 0.5, 0.3, 0.05, 1.0])
    gt_matches0 = np.array([1, 2, -1, -2, 3])
    counts = metrics.counts_by_confidence(matches0, confidences0, gt_matches0, bins=10)
    assert counts == {"correct": [0] * 9 + [2], "scored": [0] * 5 + [1, 0, 0, 0, 2]}


def test_counts_by_confidence_give_match_counts_at_every_threshold() -> None:
    rng = np.random.default_rng(0)
    gt_matches0 = rng.integers(-2, 40, size=300)
    matches0 = np.where(rng.random(300) < 0.7, gt_matches0.clip(0), rng.integers(-1, 40, size=300))
    confidences0 = rng.random(300)
    counts = metrics.counts_by_confidence(matches0, confidences0, gt_matches0)
    for k in (0, 13, 50, 99):
        expected = metrics.match_counts(np.where(confidences0 >= k / 100, matches0, -1), gt_matches0)
        assert (sum(counts["correct"][k:]), sum(counts["scored"][k:])) == expected[:2]


def test_precision_at_recall_picks_the_most_precise_threshold_that_recalls_enough() -> None:
    # thresholds 0, 0.25, 0.5, 0.75 -> (correct, scored) from each bin up: (9, 16), (8, 10), (6, 6), (2, 2)
    correct, scored, positives = [1, 2, 4, 2], [6, 4, 4, 2], 10
    assert metrics.precision_at_recall(correct, scored, positives, 0.6) == {
        "threshold": 0.5, "precision_pooled": 1.0, "recall_pooled": 0.6}
    assert metrics.precision_at_recall(correct, scored, positives, 0.7)["threshold"] == 0.25
    unreachable = metrics.precision_at_recall(correct, scored, positives, 0.95)
    assert all(math.isnan(v) for v in unreachable.values())
    assert math.isnan(metrics.precision_at_recall(correct, scored, 0, 0.5)["threshold"])


def test_mean_corner_error_by_hand() -> None:
    shifted = np.array([[1.0, 0, 0.3], [0, 1, 0.4], [0, 0, 1]])
    assert metrics.mean_corner_error(shifted, np.eye(3), 240, 320) == pytest.approx(0.5)
    # 21x11 image doubled in size: corners (0,0) (20,0) (20,10) (0,10) move by 0, 20, sqrt(500), 10.
    doubled = np.diag([2.0, 2.0, 1.0])
    assert metrics.mean_corner_error(doubled, np.eye(3), 11, 21) == pytest.approx((20 + 500 ** 0.5 + 10) / 4)
    assert metrics.mean_corner_error(None, np.eye(3), 11, 21) == math.inf


def test_error_auc_by_hand() -> None:
    # Recall curve through (0,0), (1,0.5), (3,1): area to 5 is 0.25 + 1.5 + 2 = 3.75; to 2 it is 0.25 + 0.5.
    aucs = metrics.error_auc([3.0, 1.0], [2.0, 5.0])
    assert aucs == {2.0: pytest.approx(0.375), 5.0: pytest.approx(0.75)}
    # A failure (inf / NaN) keeps recall at 1/2 forever.
    assert metrics.error_auc([1.0, math.inf], [1.5, 2.0]) == {1.5: pytest.approx(1 / 3), 2.0: pytest.approx(0.375)}
    # An error exactly at a threshold does not reach it (the paper's pose_auc cut).
    assert metrics.error_auc([1.0, math.inf], [1.0]) == {1.0: 0.0}
    assert metrics.error_auc([1.0, math.nan], [2.0]) == {2.0: pytest.approx(0.375)}
    assert metrics.error_auc([0.0, 0.0], [1.0]) == {1.0: pytest.approx(1.0)}
    assert math.isnan(metrics.error_auc([], [1.0])[1.0])


def test_auc_interval_resamples_whole_images() -> None:
    # 10 images x 5 warps; a matcher gains on half of the images and loses on the others, alike on
    # every warp of an image. Only 10 independent draws: resampling the 50 pairs as if independent
    # would make the interval about sqrt(5) times too narrow.
    rng = np.random.default_rng(3)
    images = np.repeat(np.arange(10), 5)
    b = rng.uniform(0.5, 2.5, 50)
    a = np.clip(b + np.repeat(rng.choice([-0.8, 0.8], 10), 5) + rng.normal(0, 0.05, 50), 0.0, None)
    by_image = metrics.auc_difference_interval(a, b, images, [3.0], rounds=500)[3.0]
    by_pair = metrics.auc_difference_interval(a, b, np.arange(50), [3.0], rounds=500)[3.0]
    assert by_image[1] - by_image[0] > 1.8 * (by_pair[1] - by_pair[0])
    gain = metrics.error_auc(a, [3.0])[3.0] - metrics.error_auc(b, [3.0])[3.0]
    assert by_image[0] < gain < by_image[1]
    assert metrics.auc_difference_interval(b, b, images, [3.0])[3.0] == (0.0, 0.0)
    assert metrics.auc_difference_interval(b / 2, b, images, [3.0])[3.0][0] > 0.0  # better on every image


def test_auc_interval_needs_two_images_and_equal_lengths() -> None:
    assert all(math.isnan(v) for v in metrics.auc_difference_interval([1.0, 2.0], [2.0, 1.0], [0, 0], [3.0])[3.0])
    with pytest.raises(ValueError, match="same length"):
        metrics.auc_difference_interval([1.0, 2.0], [2.0], [0, 1], [3.0])


def test_pose_auc_interval_holds_the_estimate_repeats_with_its_seed_and_narrows_with_more_pairs() -> None:
    """Pairs are the unit; a failure (inf) stays a failure in every resample."""
    thresholds = metrics.POSE_AUC_THRESHOLDS

    def errors(count: int) -> np.ndarray:
        values = np.random.default_rng(count).uniform(0.0, 30.0, count)
        values[::4] = math.inf  # a quarter of the pairs without a pose
        return values

    few, many = errors(40), errors(2000)
    intervals = metrics.auc_interval(few, np.arange(40), thresholds)
    for t, auc in metrics.error_auc(few, thresholds).items():
        assert intervals[t][0] < auc < intervals[t][1]
    assert metrics.auc_interval(few, np.arange(40), thresholds) == intervals  # the same seed, the same interval
    assert metrics.auc_interval(few, np.arange(40), thresholds, seed=1) != intervals
    wide = metrics.auc_interval(many, np.arange(2000), thresholds)
    for t in thresholds:
        assert wide[t][1] - wide[t][0] < 0.5 * (intervals[t][1] - intervals[t][0])
    assert intervals[20.0][1] <= 0.75 + 1e-12  # never above the share of pairs with a pose


def test_interval_is_a_point_when_every_pair_is_alike() -> None:
    for error in (4.0, math.inf):
        auc = metrics.error_auc([error] * 30, [10.0])[10.0]
        assert metrics.auc_interval([error] * 30, np.arange(30), [10.0])[10.0] == (auc, auc)
    assert metrics.mean_interval([0.25] * 30, np.arange(30)) == (0.25, 0.25)


def test_mean_interval_holds_the_mean_and_needs_two_pairs() -> None:
    values = np.random.default_rng(5).uniform(0.0, 1.0, 50)
    low, high = metrics.mean_interval(values, np.arange(50))
    assert low < values.mean() < high and high - low < 0.4
    assert all(math.isnan(v) for v in metrics.mean_interval([0.5], [0]))
    assert all(math.isnan(v) for v in metrics.mean_interval([], []))
    with pytest.raises(ValueError, match="same length"):
        metrics.mean_interval([0.5, 0.2], [0])


def test_synthetic_warp_with_outliers_recovers_homography() -> None:
    rng = np.random.default_rng(7)
    height, width = 240, 320
    h_true = sample_homography(rng, height, width, strength=1.0)
    grid = np.stack(np.meshgrid(np.linspace(20, 300, 15), np.linspace(20, 220, 12)), axis=-1).reshape(-1, 2)
    points1 = project(h_true, grid) + rng.normal(0, 0.2, size=grid.shape)
    outliers = rng.choice(len(grid), size=len(grid) * 3 // 10, replace=False)
    points1[outliers] = rng.uniform([0, 0], [width, height], size=(len(outliers), 2))
    estimate = estimate_homography(grid, points1, threshold=3.0)
    assert estimate.valid
    assert metrics.mean_corner_error(estimate.h, h_true, height, width) < 0.5
    assert not estimate.inliers[outliers].all()
    # The same matches scored against index ground truth: everything not an outlier is correct.
    matches0 = np.arange(len(grid))
    gt0 = matches0.copy()
    gt0[outliers] = -1
    correct, scored, positives = metrics.match_counts(matches0, gt0)
    assert correct / scored == pytest.approx(1 - len(outliers) / len(grid))
    assert correct == positives


def test_summary_and_histogram() -> None:
    stats = metrics.summary([4.0, 1.0, math.inf, 3.0, 2.0, math.nan])
    assert stats == {"count": 4, "nonfinite": 2, "mean": 2.5, "median": 2.5, "p95": pytest.approx(3.85),
                     "min": 1.0, "max": 4.0}
    assert metrics.summary([])["median"] is None
    hist = metrics.histogram([0.0, 0.1, 0.49, 0.5, 1.0], bins=2)
    assert hist == {"edges": [0.0, 0.5, 1.0], "counts": [3, 2]}


def test_mutual_nearest_neighbours_by_hand() -> None:
    d0 = np.array([[1.0, 0], [0, 1], [0.8, 0.6]])
    d1 = np.array([[0.6, 0.8], [1.0, 0]])
    # Similarities d0 x d1: [[0.6, 1], [0.8, 0], [0.96, 0.8]]. Row 0 -> 1 and column 1 -> 0: mutual.
    # Row 1 -> 0 but column 0 -> 2 (0.96 > 0.8): not mutual. Row 2 -> 0 and column 0 -> 2: mutual.
    np.testing.assert_array_equal(metrics.mutual_nearest_neighbours(d0, d1), [1, -1, 0])
    np.testing.assert_array_equal(metrics.mutual_nearest_neighbours(d0, np.zeros((0, 2))), [-1, -1, -1])


def test_ratio_test_baseline_by_hand() -> None:
    """Lowe's ratio test on top of mutual nearest neighbours, both ways."""
    d0 = np.eye(4)
    d1 = np.stack([np.eye(4)[2], np.eye(4)[0], [0.0, 0.5 ** 0.5, 0.0, 0.5 ** 0.5]])
    # Row 1 and row 3 are equally near d1[2]: mutual for one of them, but no ratio test passes.
    np.testing.assert_array_equal(metrics.mutual_nearest_neighbours(d0, d1, ratio=0.8), [1, -1, 0, -1])
    assert (metrics.mutual_nearest_neighbours(d0, d1) >= 0).sum() == 3
    # Row 0's ratio passes (0.63 vs 0.89) but d1[0] is as near to d0[1]: the test on image 1's side fails.
    sides0, sides1 = np.array([[0.8, 0.6], [0.8, -0.6]]), np.eye(2)
    np.testing.assert_array_equal(metrics.mutual_nearest_neighbours(sides0, sides1), [0, -1])
    np.testing.assert_array_equal(metrics.mutual_nearest_neighbours(sides0, sides1, ratio=0.8), [-1, -1])
    np.testing.assert_array_equal(metrics.mutual_nearest_neighbours(d0, d1[:1], ratio=0.8), [-1, -1, -1, -1])
