"""Relative camera pose: from matches through the essential matrix, and its errors against the truth.

Conventions follow the SuperGlue paper's pose experiments: poses map
camera-0 coordinates to camera-1 coordinates (x1 = R x0 + t); translation
is compared by direction only, since an essential matrix fixes it up to
scale and sign; the pose error is the larger of the rotation and the
translation-direction angle, in degrees, and a failed estimate is infinitely
wrong so that it lowers an AUC instead of dropping out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


RANSAC_THRESHOLD_PX = 1.0  # of the image the keypoints live in
RANSAC_CONFIDENCE = 0.99999
EPIPOLAR_THRESHOLD = 5e-4  # on the squared symmetric epipolar distance in normalised coordinates


def normalise(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Pixels -> normalised image coordinates ((x - cx) / fx, (y - cy) / fy); skew is not used."""
    return (np.asarray(points, dtype=np.float64).reshape(-1, 2) - k[:2, 2]) / np.diag(k)[:2]


# Why a pair has no pose, as counted in the eval summary (``summary.pose.failures``).
TOO_FEW_MATCHES = "too_few_matches"          # the five-point solver needs five
BAD_INTRINSICS = "bad_intrinsics"            # a K with a non-finite entry or a focal length <= 0
NON_FINITE_POINTS = "non_finite_points"
NO_MOTION = "no_motion"                      # fewer than 5 matches moved more than the RANSAC threshold
COLLINEAR_POINTS = "collinear_points"        # the matched points of an image lie on one line (or one point)
SOLVER_FAILED = "solver_failed"              # OpenCV raised (5.1's five-point solver on near-degenerate samples)
NO_SOLUTION = "no_solution"                  # no essential matrix, or none with points in front of both cameras
FAILURE_REASONS = (TOO_FEW_MATCHES, BAD_INTRINSICS, NON_FINITE_POINTS, NO_MOTION, COLLINEAR_POINTS, SOLVER_FAILED,
                   NO_SOLUTION)


@dataclass(frozen=True)
class NoPose:
    """A pair without a pose estimate and why: it scores an infinite error instead of stopping a run."""

    reason: str


def intrinsics_valid(k: np.ndarray) -> bool:
    """Whether K can normalise pixels: finite, with positive focal lengths (a CameraInfo of zeros is not)."""
    k = np.asarray(k, dtype=np.float64)
    return k.shape == (3, 3) and bool(np.isfinite(k).all()) and k[0, 0] > 0 and k[1, 1] > 0


def degenerate_reason(normalised0: np.ndarray, normalised1: np.ndarray, threshold: float) -> str | None:
    """Why matches cannot fix an essential matrix, or None. ``threshold`` is RANSAC's, normalised.

    A match that moves less than the threshold lies within it of every
    epipolar line [t]x x0 through x0, so it says nothing about the
    translation: fewer than five moving matches (the solver's minimal
    sample) leave the pose undetermined. Points on one line in either image
    leave the epipolar geometry undetermined too.
    """
    if not (np.isfinite(normalised0).all() and np.isfinite(normalised1).all()):
        return NON_FINITE_POINTS
    if np.count_nonzero(np.linalg.norm(normalised1 - normalised0, axis=1) >= threshold) < 5:
        return NO_MOTION
    for points in (normalised0, normalised1):
        spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
        if spread[1] / math.sqrt(len(points)) < threshold:  # RMS distance to the best line
            return COLLINEAR_POINTS
    return None


def estimate_relative_pose(points0: np.ndarray, points1: np.ndarray, k0: np.ndarray, k1: np.ndarray,
                           threshold_px: float = RANSAC_THRESHOLD_PX, confidence: float = RANSAC_CONFIDENCE,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | NoPose:
    """(R, t, inlier mask) from image-0 to image-1 camera via RANSAC on the essential matrix, computed
    exactly as the reference's ``estimate_pose``, or NoPose with the reason; it never raises.

    Points are normalised by the intrinsics and the pixel threshold divided
    by the focal length (fx of K0 + fy of K1) / 2. Of several stacked
    solutions, the first with most points in front of both cameras wins.
    Two of the reference's details are kept on purpose, so that scores can
    be compared with published ones: ``recoverPose`` runs with its default
    distance threshold, and one inlier mask is shared by the candidates,
    each narrowing it for the next (this matters only with exactly 5 matches).
    """
    if len(points0) < 5:
        return NoPose(TOO_FEW_MATCHES)
    if not (intrinsics_valid(k0) and intrinsics_valid(k1)):
        return NoPose(BAD_INTRINSICS)
    focal = 0.5 * (k0[0, 0] + k1[1, 1])
    normalised0, normalised1 = normalise(points0, k0), normalise(points1, k1)
    reason = degenerate_reason(normalised0, normalised1, threshold_px / focal)
    if reason is not None:
        return NoPose(reason)
    try:
        essential, mask = cv2.findEssentialMat(normalised0, normalised1, np.eye(3), method=cv2.RANSAC,
                                               prob=confidence, threshold=threshold_px / focal)
        if essential is None or essential.size == 0:
            return NoPose(NO_SOLUTION)
        best, result = 0, NoPose(NO_SOLUTION)
        for candidate in essential.reshape(-1, 3, 3):
            count, rotation, translation, _ = cv2.recoverPose(candidate, normalised0, normalised1, np.eye(3),
                                                              mask=mask)
            if count > best:
                best, result = count, (rotation, translation[:, 0], mask.ravel() > 0)
    except cv2.error:
        return NoPose(SOLVER_FAILED)
    return result


def epipolar_errors(points0: np.ndarray, points1: np.ndarray, t_0to1: np.ndarray, k0: np.ndarray,
                    k1: np.ndarray) -> np.ndarray:
    """Squared symmetric epipolar distance of each match in normalised coordinates, as the reference
    computes it: (x1^T E x0)^2 (1 / |(E x0)_xy|^2 + 1 / |(E^T x1)_xy|^2) with E = [t]x R."""
    x0 = np.c_[normalise(points0, k0), np.ones(len(points0))]
    x1 = np.c_[normalise(points1, k1), np.ones(len(points1))]
    tx, ty, tz = t_0to1[:3, 3]
    essential = np.array([[0, -tz, ty], [tz, 0, -tx], [-ty, tx, 0]]) @ t_0to1[:3, :3]
    line1, line0 = x0 @ essential.T, x1 @ essential  # epipolar lines in image 1 and image 0
    residual = np.sum(x1 * line1, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return residual ** 2 * (1.0 / (line1[:, 0] ** 2 + line1[:, 1] ** 2)
                                + 1.0 / (line0[:, 0] ** 2 + line0[:, 1] ** 2))


def scale_intrinsics(k: np.ndarray, scales: tuple[float, float]) -> np.ndarray:
    """K of a resized image, from (original / resized) scales: rows 0 and 1 divided (no half-pixel shift,
    as the reference)."""
    return np.diag([1.0 / scales[0], 1.0 / scales[1], 1.0]) @ k


def rotate_intrinsics(k: np.ndarray, width: int, height: int, turns: int) -> np.ndarray:
    """K after ``np.rot90(image, turns)`` of a width x height image: pixel (x, y) goes to (y, w-1-x) for
    one turn, (w-1-x, h-1-y) for two and (h-1-y, x) for three; skew is dropped."""
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    new = {0: (fx, fy, cx, cy), 1: (fy, fx, cy, width - 1 - cx),
           2: (fx, fy, width - 1 - cx, height - 1 - cy), 3: (fy, fx, height - 1 - cy, cx)}[turns]
    return np.array([[new[0], 0.0, new[2]], [0.0, new[1], new[3]], [0.0, 0.0, 1.0]])


def inplane_rotation(turns: int) -> np.ndarray:
    """4x4 rotation of a camera about its optical axis that matches ``np.rot90(image, turns)`` of its image."""
    c, s = {0: (1, 0), 1: (0, -1), 2: (-1, 0), 3: (0, 1)}[turns]
    rotation = np.eye(4)
    rotation[:2, :2] = [[c, -s], [s, c]]
    return rotation


def rotate_relative_pose(t_0to1: np.ndarray, turns0: int, turns1: int) -> np.ndarray:
    """T_0to1 of the two cameras after their images are turned: Rz(turns1) T Rz(turns0)^-1."""
    return inplane_rotation(turns1) @ t_0to1 @ inplane_rotation(turns0).T


def rotation_error_deg(r_estimate: np.ndarray, r_true: np.ndarray) -> float:
    """Angle [deg] of the rotation taking the estimate to the truth."""
    cosine = (np.trace(np.asarray(r_estimate).T @ np.asarray(r_true)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def translation_error_deg(t_estimate: np.ndarray, t_true: np.ndarray) -> float:
    """Angle [deg] between translation directions, sign-agnostic as an essential matrix fixes only the line.

    A zero-length vector has no direction: the error is then NaN.
    """
    a = np.asarray(t_estimate, dtype=np.float64).reshape(3)
    b = np.asarray(t_true, dtype=np.float64).reshape(3)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms < 1e-12:
        return math.nan
    return float(np.degrees(np.arccos(np.clip(abs(a @ b) / norms, 0.0, 1.0))))


def pose_error_deg(r_estimate: np.ndarray | None, t_estimate: np.ndarray | None,
                   r_true: np.ndarray, t_true: np.ndarray) -> float:
    """The paper's pose error: the larger of the rotation and translation-direction errors; inf on failure."""
    if r_estimate is None or t_estimate is None:
        return math.inf
    t_error = translation_error_deg(t_estimate, t_true)
    if math.isnan(t_error):
        return math.nan
    return max(rotation_error_deg(r_estimate, r_true), t_error)


def relative_pose(r_world0: np.ndarray, t_world0: np.ndarray,
                  r_world1: np.ndarray, t_world1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) taking camera-0 coordinates to camera-1 coordinates, from camera-to-world poses."""
    r_10 = np.asarray(r_world1).T @ np.asarray(r_world0)
    t_10 = np.asarray(r_world1).T @ (np.asarray(t_world0) - np.asarray(t_world1))
    return r_10, t_10


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a (not necessarily unit) quaternion in ROS (x, y, z, w) order."""
    q = np.array([w, x, y, z], dtype=np.float64)
    norm = np.linalg.norm(q)
    if norm < 1e-12:
        raise ValueError("quaternion has zero length")
    w, x, y, z = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
