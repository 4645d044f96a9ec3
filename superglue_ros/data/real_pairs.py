"""Real image pairs with a known relative pose, assembled from data that installs from package registries.

Rendered scenes have exact ground truth but rendered pixels; these are real
cameras: the 13 stereo chessboard pairs of ``opencv-doc`` (real office scenes,
the rig calibrated here from the chessboards, images undistorted), and two
rectified Middlebury stereo pairs, ``aloe`` (``opencv-doc``) and
``motorcycle`` (scikit-image). Stereo pairs differ by a sideways baseline
with occlusions and parallax, not by large rotations, so they complement
the rendered scenes rather than replace them. None of these images is part
of the training data.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files.images import ImageReadError, read_image, write_image
from ..files.outputs import write_bytes
from .pair_list import format_line

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
CHESSBOARD = (9, 6)  # inner corners of the opencv-doc calibration board
SQUARE = 0.025  # metres (left_intrinsics.yml); only the direction of the baseline is scored
CHESSBOARD_VIEWS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "11", "12", "13", "14")
# Middlebury 2006 full-size images: focal length 3740 px, baseline 160 mm (vision.middlebury.edu/stereo/data).
ALOE_FOCAL, ALOE_BASELINE = 3740.0, 0.160
# Middlebury 2014 motorcycle as scikit-image ships it (quarter size), from its docstring.
MOTORCYCLE = {"focal": 994.978, "cx": 311.193, "cy": 254.877, "dx": 31.086, "baseline": 0.193001}


@dataclass(frozen=True)
class RealPair:
    name: str
    image0: np.ndarray
    image1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    t_0to1: np.ndarray


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = rotation, np.ravel(translation)
    return transform


def chessboard_stereo_pairs(folder: Path = OPENCV_DATA) -> Iterator[RealPair]:
    """The left/right views of opencv-doc's stereo calibration set, with the rig's pose from a stereo calibration
    on the same chessboards, and both images undistorted (so a pinhole model holds)."""
    views = [(read_image(folder / f"left{n}.jpg", flags=cv2.IMREAD_GRAYSCALE),
              read_image(folder / f"right{n}.jpg", flags=cv2.IMREAD_GRAYSCALE)) for n in CHESSBOARD_VIEWS]
    board = np.zeros((CHESSBOARD[0] * CHESSBOARD[1], 3), np.float32)
    board[:, :2] = np.mgrid[0:CHESSBOARD[0], 0:CHESSBOARD[1]].T.reshape(-1, 2) * SQUARE
    found = [(corners(left), corners(right)) for left, right in views]
    used = [(view, c) for view, c in zip(views, found) if c[0] is not None and c[1] is not None]
    size = (views[0][0].shape[1], views[0][0].shape[0])
    points = [board] * len(used)
    left_corners, right_corners = [c[0] for _, c in used], [c[1] for _, c in used]
    _, k_left, d_left, _, _ = cv2.calibrateCamera(points, left_corners, size, None, None)
    _, k_right, d_right, _, _ = cv2.calibrateCamera(points, right_corners, size, None, None)
    _, k_left, d_left, k_right, d_right, rotation, translation, _, _ = cv2.stereoCalibrate(
        points, left_corners, right_corners, k_left, d_left, k_right, d_right, size, flags=cv2.CALIB_FIX_INTRINSIC)
    for number, (left, right) in zip(CHESSBOARD_VIEWS, views):
        undistorted = cv2.undistort(left, k_left, d_left), cv2.undistort(right, k_right, d_right)
        yield RealPair(f"chessboard{number}", *undistorted, k_left, k_right, rigid(rotation, translation))


def corners(image: np.ndarray) -> np.ndarray | None:
    found, points = cv2.findChessboardCorners(image, CHESSBOARD)
    if not found:
        return None
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    return cv2.cornerSubPix(image, points, (11, 11), (-1, -1), criteria)


def aloe_pair(folder: Path = OPENCV_DATA) -> Iterator[RealPair]:
    """Middlebury 2006 aloe (full size), rectified: the right camera sits one baseline to the left's right."""
    left = read_image(folder / "aloeL.jpg", flags=cv2.IMREAD_GRAYSCALE)
    right = read_image(folder / "aloeR.jpg", flags=cv2.IMREAD_GRAYSCALE)
    height, width = left.shape
    k = np.array([[ALOE_FOCAL, 0, (width - 1) / 2], [0, ALOE_FOCAL, (height - 1) / 2], [0, 0, 1]])
    yield RealPair("aloe", left, right, k, k, rigid(np.eye(3), [-ALOE_BASELINE, 0, 0]))


def motorcycle_pair() -> Iterator[RealPair]:
    """Middlebury 2014 motorcycle from scikit-image, rectified, with its published calibration."""
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    m = MOTORCYCLE
    k0 = np.array([[m["focal"], 0, m["cx"]], [0, m["focal"], m["cy"]], [0, 0, 1]])
    k1 = k0.copy()
    k1[0, 2] += m["dx"]
    gray = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (left, right)]
    yield RealPair("motorcycle", gray[0], gray[1], k0, k1, rigid(np.eye(3), [-m["baseline"], 0, 0]))


SOURCES: dict[str, Callable[[], Iterator[RealPair]]] = {
    "opencv-doc chessboard stereo (apt-get install opencv-doc)": chessboard_stereo_pairs,
    "Middlebury aloe (apt-get install opencv-doc)": aloe_pair,
    "Middlebury motorcycle (pip install scikit-image)": motorcycle_pair,
}


def write_real_pairs(out_dir: str | Path) -> tuple[Path, list[str]]:
    """Images and ``pairs.txt`` of every source that is installed; returns the list and the sources missing."""
    out = Path(out_dir)
    lines, missing = [], []
    for label, source in SOURCES.items():
        try:
            pairs = list(source())
        except (ImageReadError, ModuleNotFoundError):
            missing.append(label)
            continue
        for pair in pairs:
            names = f"{pair.name}_0.png", f"{pair.name}_1.png"
            for name, image in zip(names, (pair.image0, pair.image1)):
                write_image(out / name, image)
            lines.append(format_line(*names, pair.k0, pair.k1, pair.t_0to1))
    path = out / "pairs.txt"
    write_bytes(path, "".join(line + "\n" for line in lines).encode())
    return path, missing
