"""Rendering a scene from a pinhole camera: a z-buffer with exact depth, texturing, and camera effects.

Depth is computed per pixel centre by ray-plane intersection, not
interpolated between vertices, so the ground truth derived from it is exact;
texturing is deferred to the visible surface of each pixel and filtered
across mip levels, so distant and grazing surfaces neither alias nor change
abruptly between views.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .scene_builder import Rect

NEAR = 0.05  # metres; surfaces nearer than this are clipped, as by a real lens
EDGE_EPS = 1e-4  # rectangle edges are padded by this fraction so that abutting faces leave no cracks


def _rays(K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ray directions (x, y, 1) in the camera frame; K is upper triangular with K[2,2] = 1."""
    w, h = size
    ki = np.linalg.inv(K)
    x, y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return (ki[0, 0] * x + ki[0, 1] * y + ki[0, 2]).astype(np.float32), (ki[1, 1] * y + ki[1, 2]).astype(np.float32)


def _roi(corners_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Pixel bounding box of a rectangle clipped to z >= NEAR, so the per-pixel work stays local."""
    pts = []
    for a, b in zip(corners_cam, np.roll(corners_cam, -1, axis=0)):
        if a[2] >= NEAR:
            pts.append(a)
        if (a[2] >= NEAR) != (b[2] >= NEAR):
            pts.append(a + (NEAR - a[2]) / (b[2] - a[2]) * (b - a))
    if not pts:
        return None
    p = np.array(pts) @ K.T
    p = p[:, :2] / p[:, 2:]
    w, h = size
    x0, y0 = np.maximum(np.floor(p.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(p.max(0)).astype(int) + 2, (w, h))
    return (x0, x1, y0, y1) if x1 > x0 and y1 > y0 else None


def render_depth(rects: Sequence[Rect], K: np.ndarray, pose: np.ndarray,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer pass: analytic ray-plane depth (float32, inf = nothing) and surface id (int16, -1 = nothing).

    Depth is exact per pixel centre (no interpolation between vertices), so
    ground truth derived from it is exact. Backdrop rectangles are only
    evaluated where nothing nearer was hit, since they enclose the scene.
    """
    w, h = size
    depth = np.full((h, w), np.inf, np.float32)
    ids = np.full((h, w), -1, np.int16)
    rx, ry = _rays(K, size)
    R, t = pose[:3, :3], pose[:3, 3]
    for i, rect in enumerate(rects):
        roi = _roi(rect.corners() @ R.T + t, K, size)
        if roi is None:
            continue
        x0, x1, y0, y1 = roi
        zb, ib = depth[y0:y1, x0:x1], ids[y0:y1, x0:x1]
        if rect.backdrop and not np.isinf(zb).any():
            continue
        dx, dy = rx[y0:y1, x0:x1], ry[y0:y1, x0:x1]
        n, o, u, v = R @ rect.normal, R @ rect.origin + t, R @ rect.u, R @ rect.v
        n0, n1, n2, u0, u1, u2, v0, v1, v2 = (float(c) for c in (*n, *u, *v))  # keep float32 maths
        with np.errstate(divide="ignore", invalid="ignore"):
            z = float(n @ o) / (n0 * dx + n1 * dy + n2)
            a = (z * (u0 * dx + u1 * dy + u2) - float(o @ u)) / float(u @ u)
            b = (z * (v0 * dx + v1 * dy + v2) - float(o @ v)) / float(v @ v)
            win = (z > NEAR) & (z < zb) & (np.abs(a - 0.5) <= 0.5 + EDGE_EPS) & (np.abs(b - 0.5) <= 0.5 + EDGE_EPS)
        zb[win], ib[win] = z[win], i
    return depth, ids


def _texture_homography(rect: Rect, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Image pixel -> texel map of the rectangle's plane (inverse of texel -> pixel)."""
    R, t = pose[:3, :3], pose[:3, 3]
    th, tw = rect.texture_shape
    su, sv = tw * rect.repeat[0], th * rect.repeat[1]  # texels across the whole rectangle
    texel_to_ab = np.array([[1 / su, 0, 0.5 / su], [0, 1 / sv, 0.5 / sv], [0, 0, 1]])
    return np.linalg.inv(K @ np.column_stack([R @ rect.u, R @ rect.v, R @ rect.origin + t]) @ texel_to_ab)


def _sample(level: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of scattered texels (remap wants < 32767 columns, hence the reshape)."""
    n = len(tx)
    cols = 1024
    mx, my = (np.zeros(-(-n // cols) * cols, np.float32) for _ in range(2))
    mx[:n], my[:n] = tx, ty
    mx, my = mx.reshape(-1, cols), my.reshape(-1, cols)
    out = cv2.remap(level, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.reshape(-1, *level.shape[2:])[:n].astype(np.float32)


def shade(rects: Sequence[Rect], K: np.ndarray, pose: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Deferred texturing of the visible surface of each pixel; (H, W, 3) float32 BGR in [0, 255].

    Only pixels that won the z-test are textured, each once. Texel
    coordinates come from the plane homography; the mip level from its
    Jacobian (texels per pixel), blended between two levels (trilinear), so
    textures neither alias when far nor change abruptly between views.
    """
    h, w = ids.shape
    gray = np.zeros(h * w, np.float32)  # texture intensity; colour textures go to ``bgr`` (allocated if any)
    bgr: np.ndarray | None = None
    flat = ids.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(len(rects) + 1))
    xs, ys = (g.ravel() for g in np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))
    for i, rect in enumerate(rects):
        idx = order[bounds[i]:bounds[i + 1]]
        if len(idx) == 0:
            continue
        x, y = xs[idx], ys[idx]
        hom = _texture_homography(rect, K, pose)
        hom /= np.abs(hom[2]).max()
        (h00, h01, h02), (h10, h11, h12), (h20, h21, h22) = hom.tolist()
        inv_den = 1 / (h20 * x + h21 * y + h22)
        tx = (h00 * x + h01 * y + h02) * inv_den
        ty = (h10 * x + h11 * y + h12) * inv_den
        # texels per pixel = sqrt(|det J|), and det J = det(H) / den^3 for a homography: a cheap,
        # isotropic footprint (between the blur of the max-axis rule and the aliasing of the min)
        top = len(rect.pyramid) - 1
        lod = np.clip(0.5 * float(np.log2(abs(np.linalg.det(hom)))) + 1.5 * np.log2(np.abs(inv_den)), 0, top)
        lo = lod.astype(np.int8)
        colour = np.zeros((len(idx),) + rect.pyramid[0].shape[2:], np.float32)
        for k in range(top + 1):
            sel = np.flatnonzero(lo == k)
            if len(sel) == 0:
                continue
            frac = lod[sel] - k
            for lvl, wgt in ((k, 1 - frac), (min(k + 1, top), frac)):
                s = np.float32(2.0 ** -lvl)
                sample = _sample(rect.pyramid[lvl], (tx[sel] + 0.5) * s - 0.5, (ty[sel] + 0.5) * s - 0.5)
                colour[sel] += sample * (wgt if sample.ndim == 1 else wgt[:, None])
        if colour.ndim == 1:
            gray[idx] = colour
        else:
            bgr = np.ones((h * w, 3), np.float32) if bgr is None else bgr
            gray[idx], bgr[idx] = 1.0, colour
    tints = np.vstack([np.zeros((1, 3), np.float32)] + [r.tint[None] for r in rects])
    out = gray[:, None] * tints[flat + 1]
    return (out if bgr is None else out * bgr).reshape(h, w, 3)


def photometric_change(color: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-view lighting and sensor effects on a float BGR render; uint8 BGR out.

    Per-surface gains mimic light sources that reach faces differently from
    each viewpoint; a gradient, a soft spotlight, white balance, gamma,
    contrast, blur, noise and JPEG mimic the rest of a real camera.
    """
    h, w = ids.shape
    gains = np.exp(rng.normal(0, 0.15, int(ids.max()) + 2)).astype(np.float32)
    yy, xx = np.ogrid[0:h, 0:w]
    xx, yy = np.float32(1 / w) * xx - np.float32(0.5), np.float32(1 / h) * yy - np.float32(0.5)
    light = 1 + rng.uniform(-0.6, 0.6) * xx + rng.uniform(-0.6, 0.6) * yy
    cx, cy, sigma = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.15, 0.6)
    light = light + rng.uniform(-0.3, 0.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    light = np.clip(light, 0.2, None) * gains[ids + 1]
    img = color * light[..., None] * rng.uniform(0.9, 1.1, 3).astype(np.float32)  # white balance
    out = cv2.convertScaleAbs(img)  # rounds and saturates; img is never negative
    x = np.arange(256) / 255.0  # gamma, contrast and brightness as one look-up table
    curve = (255 * x ** np.exp(rng.uniform(-0.35, 0.35)) - 128) * rng.uniform(0.75, 1.25) + 128 + rng.uniform(-20, 20)
    out = cv2.LUT(out, np.clip(np.rint(curve), 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.3))
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(rng.uniform(0, 5))  # luma noise
    out = cv2.convertScaleAbs(np.maximum(out + noise, 0))
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 90))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
