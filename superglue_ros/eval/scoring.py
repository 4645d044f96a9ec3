"""Scores of one matched pair against its ground truth: a known homography, or a known relative pose.

SuperGlue is always scored beside two descriptor baselines on the same
keypoints, mutual nearest neighbours alone and with Lowe's ratio test at
0.8, so that a report says what the learned matcher adds over the classic
one. Pose scores are computed exactly as the SuperGlue paper and its
reference implementation compute them (:mod:`superglue_ros.geometry.pose`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..data.homographies import ground_truth_matches
from ..geometry.homography import HomographyEstimate, estimate_homography
from ..geometry.pose import (EPIPOLAR_THRESHOLD, NoPose, epipolar_errors, estimate_relative_pose, intrinsics_valid,
                             rotation_error_deg, translation_error_deg)
from ..inference.matcher import PairMatch
from ..models.optimal_transport import extract_matches
from .. import metrics

# Descriptor-matching baselines: name -> Lowe ratio (None: plain mutual nearest neighbours).
BASELINES: dict[str, float | None] = {"mnn": None, "mnn_ratio": 0.8}
METHODS = ("superglue", *BASELINES)


def method_matches(pair_match: PairMatch) -> dict[str, np.ndarray]:
    """matches0 of SuperGlue and of each baseline, on the pair's keypoints."""
    candidates = {"superglue": pair_match.result.matches0.reshape(-1).cpu().numpy().astype(np.int64)}
    descriptors = (pair_match.features0.descriptors.float().cpu().numpy(),
                   pair_match.features1.descriptors.float().cpu().numpy())
    for name, ratio in BASELINES.items():
        candidates[name] = metrics.mutual_nearest_neighbours(*descriptors, ratio=ratio)
    return candidates


def score_synthetic(pair_match: PairMatch, h_true: np.ndarray,
                    estimate: HomographyEstimate) -> dict[str, dict[str, Any]]:
    """SuperGlue and the baselines scored on the same keypoints against the known warp.

    ``estimate`` is the homography already fitted to SuperGlue's matches; the
    baselines' are fitted with its RANSAC threshold.
    """
    kpts0 = pair_match.features0.keypoints.cpu().numpy()
    kpts1 = pair_match.features1.keypoints.cpu().numpy()
    gt0, _ = ground_truth_matches(kpts0, kpts1, h_true)
    height, width = pair_match.features0.image_size
    scores: dict[str, dict[str, Any]] = {}
    for name, matches0 in method_matches(pair_match).items():
        correct, scored, positives = metrics.match_counts(matches0, gt0)
        matched = np.flatnonzero(matches0 >= 0)
        fitted = estimate if name == "superglue" else estimate_homography(
            kpts0[matched], kpts1[matches0[matched]], threshold=estimate.threshold)
        error = metrics.mean_corner_error(fitted.h if fitted.valid else None, h_true, height, width)
        scores[name] = {"matches": int(matched.size), "precision": metrics.ratio_or_nan(correct, scored),
                        "recall": metrics.ratio_or_nan(correct, positives), "correct": correct, "scored": scored,
                        "corner_error": error, "inliers": fitted.num_inliers}
    scores["superglue"]["by_confidence"] = metrics.counts_by_confidence(*candidate_matches(pair_match), gt0)
    scores["keypoints"] = {"keypoints0": int(len(kpts0)), "keypoints1": int(len(kpts1)),
                           "ground_truth_matches": int((gt0 >= 0).sum())}
    return scores


def candidate_matches(pair_match: PairMatch) -> tuple[np.ndarray, np.ndarray]:
    """Every mutual best assignment of image 0 with its confidence, below the match threshold too."""
    log_assignment = pair_match.result.log_assignment.float().cpu()
    matches0, _, scores0, _ = extract_matches(log_assignment[None], 0.0)
    return matches0[0].numpy().astype(np.int64), scores0[0].numpy()


def score_pose(pair_match: PairMatch, k0: np.ndarray, k1: np.ndarray, t_0to1: np.ndarray) -> dict[str, dict[str, Any]]:
    """SuperGlue and the baselines scored against the relative pose, each as the reference scores a pair."""
    kpts0 = pair_match.features0.keypoints.cpu().numpy().astype(np.float64)
    kpts1 = pair_match.features1.keypoints.cpu().numpy().astype(np.float64)
    return {name: pose_scores(kpts0, kpts1, matches0, k0, k1, t_0to1)
            for name, matches0 in method_matches(pair_match).items()}


def pose_scores(kpts0: np.ndarray, kpts1: np.ndarray, matches0: np.ndarray, k0: np.ndarray, k1: np.ndarray,
                t_0to1: np.ndarray) -> dict[str, Any]:
    """Pose error (the larger of the rotation and translation-direction errors, in degrees; infinite
    when no pose is found, with the reason in ``failure``), epipolar precision (matches whose squared
    symmetric epipolar distance is below 5e-4; 0 without matches or usable intrinsics) and matching
    score (correct matches / keypoints of image 0)."""
    matched = np.flatnonzero(matches0 >= 0)
    points0, points1 = kpts0[matched], kpts1[matches0[matched]]
    correct = 0
    if intrinsics_valid(k0) and intrinsics_valid(k1):
        correct = int(np.sum(epipolar_errors(points0, points1, t_0to1, k0, k1) < EPIPOLAR_THRESHOLD))
    estimate = estimate_relative_pose(points0, points1, k0, k1)
    failure = estimate.reason if isinstance(estimate, NoPose) else None
    if failure is not None:
        rotation = translation = math.inf
    else:
        rotation = rotation_error_deg(estimate[0], t_0to1[:3, :3])
        translation = translation_error_deg(estimate[1], t_0to1[:3, 3])
    return {"rotation_error": rotation, "translation_error": translation,
            "error": float(np.maximum(rotation, translation)), "failure": failure, "matches": int(matched.size),
            "correct": correct, "precision": correct / matched.size if matched.size else 0.0,
            "matching_score": correct / len(kpts0) if len(kpts0) else 0.0}
