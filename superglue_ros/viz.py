"""Side-by-side match pictures for people (CLI --viz, reports, the node's debug topic)."""
from __future__ import annotations

import cv2
import numpy as np


def confidence_colors(confidences: np.ndarray) -> np.ndarray:
    """(K,) in [0, 1] -> (K, 3) uint8 BGR from red (low) through yellow to green (high)."""
    c = np.clip(np.asarray(confidences, dtype=np.float32), 0.0, 1.0)
    red = np.clip(2.0 * (1.0 - c), 0.0, 1.0)
    green = np.clip(2.0 * c, 0.0, 1.0)
    return (np.stack([np.zeros_like(c), green, red], axis=1) * 255).astype(np.uint8)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image[:, :, :3].copy()


def draw_matches(image0: np.ndarray, image1: np.ndarray, points0: np.ndarray, points1: np.ndarray,
                 confidences: np.ndarray, text: str = "", gap: int = 10) -> np.ndarray:
    """Both images side by side (BGR uint8), one line per match coloured by confidence."""
    left, right = _as_bgr(image0), _as_bgr(image1)
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, dtype=np.uint8)
    canvas[:left.shape[0], :left.shape[1]] = left
    offset = left.shape[1] + gap
    canvas[:right.shape[0], offset:] = right
    for p0, p1, color in zip(np.round(points0).astype(int), np.round(points1).astype(int),
                             confidence_colors(confidences)):
        bgr = tuple(int(v) for v in color)
        end = (int(p1[0]) + offset, int(p1[1]))
        cv2.line(canvas, (int(p0[0]), int(p0[1])), end, bgr, 1, cv2.LINE_AA)
        cv2.circle(canvas, (int(p0[0]), int(p0[1])), 2, bgr, -1, cv2.LINE_AA)
        cv2.circle(canvas, end, 2, bgr, -1, cv2.LINE_AA)
    if text:
        caption(canvas, text)
    return canvas


def caption(canvas: np.ndarray, text: str, origin: tuple[int, int] = (8, 20)) -> None:
    """Black text on a white box, readable on any picture. (An outline drawn as thicker text does not
    line up under OpenCV 5, whose glyph advance depends on the thickness.)"""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    (width, height), baseline = cv2.getTextSize(text, font, scale, 1)
    x, y = origin
    cv2.rectangle(canvas, (x - 3, y - height - 3), (x + width + 3, y + baseline + 2), (255, 255, 255), -1)
    cv2.putText(canvas, text, (x, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
