"""Image pairs of rendered 3D scenes with exact ground truth (depth, intrinsics, relative pose).

A homography of one image has no parallax and no occlusion, so a matcher
trained only on those never learns that a keypoint may vanish behind a
nearer surface or move differently from its neighbours. Here scenes are made
of textured planar rectangles at many depths (room, corridor, facade,
tabletop), two pinhole cameras look at a common region, and a z-buffer gives
each view an image and a metric depth map; correspondences then follow from
depth + pose, with a depth test for occlusion.

Design choices:
* Camera 0 stands where the kind makes sense (inside the room, in front of
  the facade, ...) and looks at its "target" region; the surface point under
  a pixel near its image centre becomes the fixation point. Camera 1 orbits
  that point (5-40 degrees in 80 % of draws, else up to ``max_rotation_deg``;
  uniformly between ``min_rotation_deg`` and the maximum when a minimum is set,
  for wide-baseline validation)
  about a mostly vertical axis, changes its distance by up to 30 % and looks
  near the fixation with some roll, so rotation and baseline grow together
  (baseline = 2 d sin(angle/2) for fixation distance d: real parallax).
* A draw is rejected (and redrawn) when a camera leaves the free space or
  enters a box, the rotation exceeds the maximum, or the covisibility (share
  of pixels of each image, backdrop excluded, that are visible in the other)
  is below ``min_overlap`` (0.3), first on a 1/4-size preview, then exactly.
* Every scene is enclosed in a distant textured cube (the backdrop, 30-60 m
  away): every pixel gets a finite depth and plausible "sky" or "far
  scenery" that moves correctly with the camera. ``ScenePair.backdrop_ids`` lets
  users mask it. Hand-made scenes without one get inf depth (and black).
* Occlusion: a point is visible when its camera-1 depth agrees with depth1
  within 5 % (``OCCLUSION_TOLERANCE``): loose enough for float32 depth and
  grazing planes; anything more than 5 % nearer (10 cm at 2 m) occludes.
  Depth lookups interpolate inverse depth (exact on a plane) except across
  depth edges, where the nearest pixel is used.

Conventions: pixel (x, y) with (0, 0) the centre of the top-left pixel
(OpenCV); arrays are indexed [row=y, col=x]; depth is metres along the
optical axis z (inf where nothing was hit); poses are 4x4 world->camera
matrices; ``T_0to1`` maps camera-0 coordinates to camera-1 coordinates,
x1 = R x0 + t. World axes: x right, y forward, z up; cameras are OpenCV
(x right, y down, z forward).
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..files.images import write_image
from ..files.outputs import write_bytes
from .depth_truth import covisibility
from .pair_list import format_line
from .render import photometric_change, render_depth, shade
from .scene_builder import KINDS, Scene, build_scene


def intrinsics(rng: np.random.Generator, size: tuple[int, int], fov_deg: tuple[float, float] = (50, 75)) -> np.ndarray:
    """Pinhole K with a random horizontal field of view, principal point at the image centre."""
    w, h = size
    f = (w / 2) / np.tan(np.deg2rad(rng.uniform(*fov_deg)) / 2)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])


def look_at(eye, target, roll: float = 0.0) -> np.ndarray:
    """4x4 world->camera pose of an upright camera at ``eye`` looking at ``target``, rolled by ``roll`` rad."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, (0, 0, 1))
    if np.linalg.norm(x) < 1e-6:  # looking straight up or down: any horizontal x will do
        x = np.cross(z, (0, 1, 0))
    x /= np.linalg.norm(x)
    c, s = np.cos(roll), np.sin(roll)
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.stack([x, np.cross(z, x), z])
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = r, -r @ eye
    return pose


def rotation_deg(T: np.ndarray) -> float:
    """Angle of the rotation part of a pose, in degrees."""
    return float(np.rad2deg(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1, 1))))


def _free(p: np.ndarray, scene: Scene, margin: float = 0.2) -> bool:
    lo, hi = scene.free_box
    if np.any(p < lo) or np.any(p > hi):
        return False
    return not any(np.all(p > a - margin) and np.all(p < b + margin) for a, b in scene.obstacles)


def _second_camera(scene: Scene, rng: np.random.Generator, pose0: np.ndarray, fixation: np.ndarray,
                   max_rotation_deg: float, min_rotation_deg: float = 0.0) -> np.ndarray | None:
    """Orbit camera 0 about the fixated point: the orbit angle sets both rotation and baseline.

    Orbit angles are 5-40 degrees for 80 % of draws (up to ``max_rotation_deg``
    otherwise), the distance changes by up to 30 %, and the second camera
    looks at a point near the fixation with a little roll. Returns None if it
    would stand outside the free space or rotate by more or less than allowed.
    With a minimum rotation the orbit angle is uniform between the two limits
    (the relative rotation, which adds look-at jitter and roll, is checked too).
    """
    c0 = -pose0[:3, :3].T @ pose0[:3, 3]
    r = c0 - fixation
    dist = np.linalg.norm(r)
    if min_rotation_deg > 0:
        theta = rng.uniform(min_rotation_deg, max_rotation_deg)
    elif rng.random() < 0.8 or max_rotation_deg <= 40:
        theta = rng.uniform(5, 40)
    else:
        theta = rng.uniform(40, max_rotation_deg)
    axis = np.array([0, 0, 1.0]) + 0.5 * rng.normal(size=3)  # mostly walking around, sometimes up/down
    axis -= (axis @ r) / dist ** 2 * r
    axis *= rng.choice([-1, 1]) / np.linalg.norm(axis)
    rot = cv2.Rodrigues(axis * np.deg2rad(theta))[0]
    c1 = fixation + rot @ r * np.exp(rng.uniform(-0.3, 0.3))
    if not _free(c1, scene):
        return None
    look = fixation + rng.normal(size=3) * 0.08 * dist
    pose1 = look_at(c1, look, roll=np.deg2rad(rng.normal(0, 5)))
    return pose1 if min_rotation_deg <= rotation_deg(pose1 @ np.linalg.inv(pose0)) <= max_rotation_deg else None


@dataclass
class ScenePair:
    """One training/evaluation pair with exact geometry (see the module docstring for conventions)."""
    image0: np.ndarray  # (H, W) uint8 gray
    image1: np.ndarray
    depth0: np.ndarray  # (H, W) float32 metres along z, inf where nothing
    depth1: np.ndarray
    K0: np.ndarray  # (3, 3) float64
    K1: np.ndarray
    T_0to1: np.ndarray  # (4, 4) float64, x1 = R x0 + t
    kind: str
    color0: np.ndarray  # (H, W, 3) uint8 BGR
    color1: np.ndarray
    ids0: np.ndarray  # (H, W) int16 surface index, -1 where nothing
    ids1: np.ndarray
    pose0: np.ndarray  # (4, 4) world->camera
    pose1: np.ndarray
    overlap: float  # covisibility of non-backdrop pixels (step-8 grid), as used for rejection
    backdrop_ids: tuple[int, ...] = ()  # surface ids of the distant backdrop ("sky"), to mask it if wanted


def _low(K: np.ndarray, size: tuple[int, int], factor: int) -> tuple[np.ndarray, tuple[int, int]]:
    """K and size of a 1/factor preview, keeping the pixel-centre convention."""
    s = 1 / factor
    k = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]]) @ K
    return k, (size[0] // factor, size[1] // factor)


def _draw_cameras(scene: Scene, geo: np.random.Generator, size: tuple[int, int], max_rotation_deg: float,
                  min_overlap: float, min_rotation_deg: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """One try at (K0, K1, pose0, pose1), judged on a cheap 1/4-size depth preview; None if rejected.

    Camera 0 stands in the kind's camera box looking at its target box; the
    surface point under a pixel near its image centre becomes the fixation
    that camera 1 orbits (``_second_camera``), so both look at one region.
    """
    backdrop = np.array([r.backdrop for r in scene.rects] + [True])  # id -1 (nothing) counts as backdrop
    K0, K1 = intrinsics(geo, size), intrinsics(geo, size)
    c0 = geo.uniform(*scene.camera0_box)
    if not _free(c0, scene):
        return None
    pose0 = look_at(c0, geo.uniform(*scene.target_box), roll=np.deg2rad(geo.normal(0, 5)))
    (k0, small), (k1, _) = _low(K0, size, 4), _low(K1, size, 4)
    d0, i0 = render_depth(scene.rects, k0, pose0, small)
    u, v = int(geo.uniform(0.3, 0.7) * small[0]), int(geo.uniform(0.3, 0.7) * small[1])
    if backdrop[i0[v, u]] or d0[v, u] < 0.5:
        return None
    fixation = pose0[:3, :3].T @ (d0[v, u] * np.linalg.inv(k0) @ (u, v, 1.0) - pose0[:3, 3])
    pose1 = _second_camera(scene, geo, pose0, fixation, max_rotation_deg, min_rotation_deg)
    if pose1 is None:
        return None
    d1, i1 = render_depth(scene.rects, k1, pose1, small)
    T = pose1 @ np.linalg.inv(pose0)
    if covisibility(d0, d1, k0, k1, T, ~backdrop[i0], ~backdrop[i1], step=2) < min_overlap:
        return None
    return K0, K1, pose0, pose1


def make_pair(seed: int, index: int, size: tuple[int, int] = (640, 480), textures: Sequence[np.ndarray] | None = None,
              kinds: Sequence[str] = KINDS, photometric: bool = True, max_rotation_deg: float = 75.0,
              min_overlap: float = 0.3, attempts: int = 400, min_rotation_deg: float = 0.0) -> ScenePair:
    """Pair number ``index`` of the stream ``seed``: a pure function of its arguments.

    Geometry, textures and photometric changes draw from separate child
    seeds, so switching ``photometric`` or the texture set leaves the
    geometry unchanged. Camera draws are rejected until the overlap (on the
    preview, then on the full render) is at least ``min_overlap``; a fresh
    scene is built every 40 failed draws, in case this one is hopeless. With
    a minimum rotation its kind is drawn again too: a corridor seldom leaves
    room to turn by much while still seeing the same surfaces.
    """
    geo, tex, photo = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3))
    kind = str(kinds[int(geo.integers(len(kinds)))])
    for attempt in range(attempts):
        if attempt % 40 == 0:
            if attempt and min_rotation_deg > 0:
                kind = str(kinds[int(geo.integers(len(kinds)))])
            scene = build_scene(kind, geo, tex, textures)
            backdrop = np.array([r.backdrop for r in scene.rects] + [True])
        cameras = _draw_cameras(scene, geo, size, max_rotation_deg, min_overlap, min_rotation_deg)
        if cameras is None:
            continue
        K0, K1, pose0, pose1 = cameras
        T = pose1 @ np.linalg.inv(pose0)
        depth0, ids0 = render_depth(scene.rects, K0, pose0, size)
        depth1, ids1 = render_depth(scene.rects, K1, pose1, size)
        overlap = covisibility(depth0, depth1, K0, K1, T, ~backdrop[ids0], ~backdrop[ids1])
        if overlap < min_overlap:
            continue
        colors = []
        for K, pose, ids in ((K0, pose0, ids0), (K1, pose1, ids1)):
            c = shade(scene.rects, K, pose, ids)
            colors.append(photometric_change(c, ids, photo) if photometric else cv2.convertScaleAbs(c))
        grays = [cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in colors]
        return ScenePair(grays[0], grays[1], depth0, depth1, K0, K1, T, kind, colors[0], colors[1], ids0, ids1,
                         pose0, pose1, overlap, tuple(int(i) for i in np.flatnonzero(backdrop[:-1])))
    raise RuntimeError(f"no pair with overlap >= {min_overlap} after {attempts} attempts (seed {seed}, index {index})")


def generate(seed: int, count: int, size: tuple[int, int] = (640, 480), textures: Sequence[np.ndarray] | None = None,
             kinds: Sequence[str] = KINDS, **kwargs) -> Iterator[ScenePair]:
    """``count`` pairs of stream ``seed``; pair i equals ``make_pair(seed, i, ...)``, so splits are fixed by seed."""
    for index in range(count):
        yield make_pair(seed, index, size, textures, kinds, **kwargs)


def depth_path(image_path: str) -> str:
    """Where the depth map of an image is stored: ``x.png`` -> ``x.depth.npy`` (float32 metres, inf kept)."""
    return os.path.splitext(image_path)[0] + ".depth.npy"


def write_pair_list(out_dir: str, pairs: Iterable[ScenePair], names: Iterable[str],
                    list_name: str = "pairs.txt") -> str:
    """Write ``<name>_0.png``, ``<name>_1.png``, their depth maps and the pair list; returns the list's path.

    Depth goes to .npy rather than 16-bit millimetre PNG because backdrop
    depths (up to ~100 m) overflow 65535 mm and inf must survive.
    """
    lines = []
    for pair, name in zip(pairs, names, strict=True):
        n0, n1 = f"{name}_0.png", f"{name}_1.png"
        for img_name, image, depth in ((n0, pair.image0, pair.depth0), (n1, pair.image1, pair.depth1)):
            write_image(os.path.join(out_dir, img_name), image)
            stored = io.BytesIO()
            np.save(stored, depth.astype(np.float32))
            write_bytes(depth_path(os.path.join(out_dir, img_name)), stored.getvalue())
        lines.append(format_line(n0, n1, pair.K0, pair.K1, pair.T_0to1))
    path = os.path.join(out_dir, list_name)
    write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return path
