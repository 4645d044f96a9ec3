"""Textures for rendered scenes: crops of openly licensed photographs, or procedural ones.

Every rectangle of a scene gets its own crop, at its own scale, so that no two
surfaces look alike and matching cannot lean on repeated texture.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def procedural_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 texture with blobs, edges and corners, so tests and demos need no photographs.

    Multi-octave noise gives shading at every scale; random shapes and an
    occasional regular pattern give the corners that keypoint detectors need.
    """
    fine = np.zeros((33, 33), np.float32)  # octaves summed on a small grid, then one resize
    for octave in range(1, 6):
        n = 2 ** octave + 1
        fine += cv2.resize(rng.random((n, n)).astype(np.float32), (33, 33), interpolation=cv2.INTER_LINEAR) / octave
    fine = (fine - fine.min()) / max(float(np.ptp(fine)), 1e-6) * 120 + rng.uniform(30, 100)
    out = cv2.resize(fine, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:  # bricks, tiles or stripes: repetitive, like man-made surfaces
        period = int(rng.integers(8, max(9, min(h, w) // 3)))
        yy, xx = np.ogrid[0:h, 0:w]
        out += np.where(((xx // period) + (yy // period)) % 2 == 0, rng.uniform(20, 60), 0).astype(np.float32)
    for _ in range(int(rng.integers(15, 60))):
        colour = float(rng.uniform(0, 255))
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = int(np.exp(rng.uniform(np.log(2), np.log(max(3, min(h, w) // 4)))))
        shape = rng.integers(3)
        if shape == 0:
            cv2.rectangle(out, c, (c[0] + r, c[1] + int(r * rng.uniform(0.3, 2))), colour, -1)
        elif shape == 1:
            cv2.circle(out, c, r, colour, -1 if rng.random() < 0.7 else int(rng.integers(1, 4)))
        else:
            cv2.line(out, c, (int(rng.integers(0, w)), int(rng.integers(0, h))), colour, int(rng.integers(1, 5)))
    return np.clip(cv2.GaussianBlur(out, (0, 0), 0.7), 0, 255).astype(np.uint8)


def random_texture(textures: Sequence[np.ndarray] | None, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a random photograph, rescaled to (h, w), so no two rectangles look alike.

    Crops keep the target aspect ratio (no stretching) and cover 25-100 % of
    the photograph's shorter side, which varies the apparent texture scale.
    Falls back to ``procedural_texture`` when no photographs are given.
    """
    if not textures:
        return procedural_texture(rng, h, w)
    src = textures[int(rng.integers(len(textures)))]
    sh, sw = src.shape[:2]
    scale = rng.uniform(0.25, 1.0) * min(sh / h, sw / w)
    ch, cw = max(2, min(sh, int(h * scale))), max(2, min(sw, int(w * scale)))
    y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    crop = src[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)


def mip_pyramid(texture: np.ndarray) -> list[np.ndarray]:
    """Mip levels for trilinear filtering, so distant or grazing surfaces do not alias."""
    levels = [texture]
    while len(levels) < 6 and min(levels[-1].shape[:2]) >= 16:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels
