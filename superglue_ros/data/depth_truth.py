"""Ground-truth correspondences of two rendered views from their depth maps, intrinsics and relative pose.

A point is visible in the other view only if nothing nearer hides it there
(a z-buffer test with a relative tolerance), so occluded keypoints are
labelled unmatched; training and evaluation then see real parallax and
occlusion, which a homography cannot produce. Pixels are (x, y) with (0, 0)
the centre of the top-left pixel; depth is metres along the optical axis.
"""
from __future__ import annotations

import numpy as np

OCCLUSION_TOLERANCE = 0.05  # relative depth disagreement that still counts as "the same surface"


def _depth_at(depth: np.ndarray, pts: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth at sub-pixel points: (value, smooth, the 4 neighbouring depths).

    Where the 4 neighbours agree within ``tol`` the value interpolates inverse
    depth bilinearly (exact for a plane, since 1/z is affine in pixels);
    across a depth edge it takes the nearest neighbour, because averaging a
    foreground and a background depth would invent a floating point.
    """
    h, w = depth.shape
    x, y = np.clip(pts[:, 0], -0.5, w - 0.5), np.clip(pts[:, 1], -0.5, h - 0.5)
    # in the outer half pixel the weights extrapolate, which is still exact for a plane
    x0, y0 = np.clip(np.floor(x).astype(int), 0, w - 2), np.clip(np.floor(y).astype(int), 0, h - 2)
    fx, fy = x - x0, y - y0
    corners = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]], 1)
    corners = corners.astype(np.float64)
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    inv = 1 / corners
    smooth = np.isfinite(corners).all(1) & (corners.min(1) >= (1 - tol) * corners.max(1))
    with np.errstate(divide="ignore"):
        interp = 1 / (inv * weights).sum(1)
    nearest = corners[np.arange(len(pts)), weights.argmax(1)]
    return np.where(smooth, interp, nearest), smooth, corners


def correspondences(points0: np.ndarray, depth0: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
                    depth1: np.ndarray, image1_shape: tuple[int, ...],
                    occlusion_tolerance: float = OCCLUSION_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Where points of image 0 land in image 1 (N, 2), and whether they are visible there (N,).

    Visible means: valid depth in view 0, in front of camera 1, inside image
    1, and not hidden: its camera-1 depth agrees with ``depth1`` within
    ``occlusion_tolerance`` (relative). At a depth edge in image 1 agreeing
    with any of the 4 neighbouring pixels is enough, since the point lies
    between them. Positions are NaN where there is no valid depth or z <= 0.
    """
    pts = np.asarray(points0, np.float64).reshape(-1, 2)
    h0, w0 = depth0.shape
    h1, w1 = image1_shape[:2]
    z0, _, _ = _depth_at(depth0, pts, occlusion_tolerance)
    inside0 = (pts[:, 0] >= -0.5) & (pts[:, 0] < w0 - 0.5) & (pts[:, 1] >= -0.5) & (pts[:, 1] < h0 - 0.5)
    ok = inside0 & np.isfinite(z0) & (z0 > 0)
    rays = np.column_stack([pts, np.ones(len(pts))]) @ np.linalg.inv(K0).T
    x1 = (rays * np.where(ok, z0, np.nan)[:, None]) @ T_0to1[:3, :3].T + T_0to1[:3, 3]
    z1 = x1[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x1 @ K1.T
        p1 = np.where((z1 > 0)[:, None], p[:, :2] / p[:, 2:], np.nan)
        inside1 = (p1[:, 0] >= -0.5) & (p1[:, 0] < w1 - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] < h1 - 0.5)
    visible = ok & inside1
    d1, smooth1, corners1 = _depth_at(depth1, np.nan_to_num(p1), occlusion_tolerance)
    with np.errstate(invalid="ignore"):
        agree = np.where(smooth1, np.abs(z1 - d1) <= occlusion_tolerance * z1,
                         (np.abs(z1[:, None] - corners1) <= occlusion_tolerance * z1[:, None]).any(1))
    return p1, visible & agree


def ground_truth_matches(keypoints0: np.ndarray, keypoints1: np.ndarray, depth0: np.ndarray, depth1: np.ndarray,
                         K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray, match_px: float = 3.0,
                         unmatched_px: float = 5.0,
                         occlusion_tolerance: float = OCCLUSION_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Labels like the homography ones: partner index, -1 (clearly unmatched) or -2 (ignore), for both images.

    The distance of keypoints i, j is the larger reprojection error of the
    two directions (depth0 takes i into image 1, depth1 takes j into image
    0), so a match must hold both ways. Mutual nearest neighbours within
    ``match_px`` are matches. A keypoint is -1 when it is not visible in the
    other image (occluded or outside) or nothing lies within
    ``unmatched_px``; when only one direction of a pair is valid (the partner
    sits on a depth edge) that direction alone decides -1 versus -2, so
    such ambiguous keypoints are ignored rather than called unmatched.
    """
    k0 = np.asarray(keypoints0, np.float64).reshape(-1, 2)
    k1 = np.asarray(keypoints1, np.float64).reshape(-1, 2)
    n, m = len(k0), len(k1)
    if n == 0 or m == 0:
        return np.full(n, -1, np.int64), np.full(m, -1, np.int64)
    p01, vis0 = correspondences(k0, depth0, K0, K1, T_0to1, depth1, depth1.shape, occlusion_tolerance)
    p10, vis1 = correspondences(k1, depth1, K1, K0, np.linalg.inv(T_0to1), depth0, depth0.shape, occlusion_tolerance)
    fwd = np.where(vis0[:, None], np.linalg.norm(np.nan_to_num(p01)[:, None] - k1[None], axis=2), np.inf)
    bwd = np.where(vis1[None, :], np.linalg.norm(k0[:, None] - np.nan_to_num(p10)[None], axis=2), np.inf)
    dist = np.maximum(fwd, bwd)
    loose = np.where(np.isinf(fwd), bwd, np.where(np.isinf(bwd), fwd, dist))
    near0, near1 = dist.argmin(1), dist.argmin(0)
    mutual0 = (near1[near0] == np.arange(n)) & (dist[np.arange(n), near0] <= match_px)
    mutual1 = (near0[near1] == np.arange(m)) & (dist[near1, np.arange(m)] <= match_px)
    far0 = ~vis0 | (loose.min(1) > unmatched_px)
    far1 = ~vis1 | (loose.min(0) > unmatched_px)
    matches0 = np.where(mutual0, near0, np.where(far0, -1, -2)).astype(np.int64)
    matches1 = np.where(mutual1, near1, np.where(far1, -1, -2)).astype(np.int64)
    return matches0, matches1


def covisibility(depth0: np.ndarray, depth1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
                 valid0: np.ndarray | None = None, valid1: np.ndarray | None = None, step: int = 8,
                 occlusion_tolerance: float = OCCLUSION_TOLERANCE) -> float:
    """Smaller of the two fractions of grid pixels seen (and counted by ``valid``) in the other view.

    The minimum, not the mean, so that a pair is only kept when both images
    are mostly useful; ``valid`` lets the backdrop not count as overlap.
    """
    fractions = []
    for da, db, ka, kb, T, va in ((depth0, depth1, K0, K1, T_0to1, valid0),
                                  (depth1, depth0, K1, K0, np.linalg.inv(T_0to1), valid1)):
        ys, xs = np.mgrid[step // 2:da.shape[0]:step, step // 2:da.shape[1]:step]
        _, vis = correspondences(np.column_stack([xs.ravel(), ys.ravel()]), da, ka, kb, T, db, db.shape,
                                 occlusion_tolerance)
        if va is not None:
            vis &= va[ys.ravel(), xs.ravel()]
        fractions.append(float(vis.mean()))
    return min(fractions)
