"""Self-supervised image pairs: a random homography of one image plus photometric noise.

This is the homography setting of the SuperGlue paper: since the warp is
known, every keypoint's true correspondence is known too, so matching can be
trained and evaluated from single, unlabelled images.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..geometry.homography import project
from .textures import procedural_texture

MAX_ROTATION_DEG = 25.0
SCALE_RANGE = (0.75, 1.25)
PERSPECTIVE = 0.12  # corner displacement, as a fraction of the shorter side
TRANSLATION = 0.08  # of each side
MAX_STRENGTH = 2.0  # beyond it, corner jitter (12% of the shorter side per unit) can fold the warped view


def sample_homography(rng: np.random.Generator, height: int, width: int, strength: float = 1.0) -> np.ndarray:
    """3x3 float64 map from pixels (x, y) of the image to pixels of its warp.

    Built by moving the four image corners: a rotation and zoom about the
    centre, an independent jitter of each corner (perspective) and a shift.
    ``strength`` scales every magnitude (0 gives the identity). The shift is
    clipped so that the warped image's centre stays well inside the frame,
    which keeps most keypoints matchable.
    """
    if height < 2 or width < 2:
        raise ValueError(f"image must be at least 2x2, got {height}x{width}")
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)
    centre = corners.mean(axis=0)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG) * strength)
    log_lo, log_hi = np.log(SCALE_RANGE)
    scale = np.exp(rng.uniform(log_lo, log_hi) * strength)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    jitter = rng.uniform(-1, 1, size=(4, 2)) * PERSPECTIVE * strength * min(height, width)
    warped = (corners - centre) @ rotation.T + centre + jitter
    shift = rng.uniform(-1, 1, size=2) * TRANSLATION * strength * np.array([width, height])
    limit = 0.25 * np.array([width, height])
    shift = np.clip(warped.mean(axis=0) + shift, centre - limit, centre + limit) - warped.mean(axis=0)
    h = cv2.getPerspectiveTransform(corners.astype(np.float32), (warped + shift).astype(np.float32))
    return np.asarray(h / h[2, 2], dtype=np.float64)


def warp_image(image: np.ndarray, h: np.ndarray, rng: np.random.Generator | None = None,
               photometric: bool = True) -> np.ndarray:
    """Warp a uint8 gray image with ``h`` into a frame of the same size.

    With an ``rng`` and ``photometric``, brightness, contrast, Gaussian noise
    and blur are also perturbed, so a matcher cannot rely on identical
    intensities. Uncovered areas are black.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"image must be (H, W) uint8, got {image.shape} {image.dtype}")
    height, width = image.shape
    warped = cv2.warpPerspective(image, np.asarray(h, dtype=np.float64), (width, height),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if rng is None or not photometric:
        return warped
    return photometric_noise(warped, rng)


def demo_pair(seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image0, image1, H from image 0 to image 1) of a generated textured scene, width x height gray:
    sample images that need no download and whose true correspondences are known."""
    rng = np.random.default_rng(seed)
    width, height = size
    rows = [np.hstack([procedural_texture(rng, height // 2, width // 2) for _ in range(2)]) for _ in range(2)]
    scene = cv2.resize(np.vstack(rows), (width, height), interpolation=cv2.INTER_LINEAR)
    h = sample_homography(rng, height, width, strength=0.7)
    return scene, warp_image(scene, h, rng), h


def photometric_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random blur, contrast, brightness and sensor noise on a uint8 gray image."""
    out = image.astype(np.float32)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.5, 1.5))
    out = (out - 127.5) * rng.uniform(0.7, 1.3) + 127.5 + rng.uniform(-30, 30)
    out += rng.normal(0.0, rng.uniform(0.0, 5.0), size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def ground_truth_matches(keypoints0: np.ndarray, keypoints1: np.ndarray, h: np.ndarray,
                         match_px: float = 3.0, unmatched_px: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels for each keypoint of both images under the known warp ``h`` (image 0 -> image 1).

    The distance between keypoints i and j is the larger of the two
    reprojection errors (0 into 1 and 1 back into 0), so a match must hold in
    both images. Returns int64 ``matches0`` (N,) and ``matches1`` (M,):
    the partner index for mutual nearest neighbours within ``match_px``,
    -1 when the nearest keypoint is farther than ``unmatched_px`` (or the
    keypoint has no valid projection), and -2 (ignore) otherwise, because
    keypoints in between are neither clearly matched nor clearly unmatched.
    """
    if match_px > unmatched_px:
        raise ValueError(f"match_px ({match_px}) must not exceed unmatched_px ({unmatched_px})")
    kpts0 = np.asarray(keypoints0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(keypoints1, dtype=np.float64).reshape(-1, 2)
    n, m = len(kpts0), len(kpts1)
    if n == 0 or m == 0:
        return np.full(n, -1, dtype=np.int64), np.full(m, -1, dtype=np.int64)
    forward = np.linalg.norm(project(h, kpts0)[:, None, :] - kpts1[None, :, :], axis=2)
    backward = np.linalg.norm(kpts0[:, None, :] - project(np.linalg.inv(h), kpts1)[None, :, :], axis=2)
    dist = np.nan_to_num(np.maximum(forward, backward), nan=np.inf)
    nearest0, nearest1 = dist.argmin(axis=1), dist.argmin(axis=0)
    min0, min1 = dist[np.arange(n), nearest0], dist[nearest1, np.arange(m)]
    mutual0 = (nearest1[nearest0] == np.arange(n)) & (min0 <= match_px)
    mutual1 = (nearest0[nearest1] == np.arange(m)) & (min1 <= match_px)
    matches0 = np.where(mutual0, nearest0, np.where(min0 > unmatched_px, -1, -2)).astype(np.int64)
    matches1 = np.where(mutual1, nearest1, np.where(min1 > unmatched_px, -1, -2)).astype(np.int64)
    return matches0, matches1
