"""Tests of the rendered-scene pairs: exact geometry, occlusion, photometry, determinism, file format."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from superglue_ros.data import depth_truth, render, scene_builder, scenes, textures
from superglue_ros.data.pair_list import format_line, parse_line

SMALL = (320, 240)


def skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def wall_scene(rng: np.random.Generator, with_box: bool = False) -> scene_builder.SceneBuilder:
    """A 12 m x 8 m wall in the plane y = 6 (no backdrop), optionally a 1 m box in front of it."""
    b = scene_builder.SceneBuilder(rng, rng, None)
    b.plane((-6, 6, -3), (12, 0, 0), (0, 0, 8))
    if with_box:
        b.box(0.0, 3.0, 0.5, (1.0, 1.0, 1.0), bottom=True)
    return b


def plane_homography(K0, K1, pose0, T_0to1, normal_w, offset_w):
    """Homography image 0 -> image 1 induced by the world plane normal_w . X = offset_w."""
    R0, t0 = pose0[:3, :3], pose0[:3, 3]
    n0 = R0 @ normal_w
    d0 = offset_w + normal_w @ (R0.T @ t0)  # plane n0 . x0 = d0 in camera-0 coordinates
    R, t = T_0to1[:3, :3], T_0to1[:3, 3]
    return K1 @ (R + np.outer(t, n0) / d0) @ np.linalg.inv(K0)


def apply_h(h, pts):
    p = np.column_stack([pts, np.ones(len(pts))]) @ h.T
    return p[:, :2] / p[:, 2:]


def epipolar_residual(pts0, pts1, K0, K1, T):
    """|x1^T E x0| of normalised coordinates, E = [t]x R."""
    E = skew(T[:3, 3]) @ T[:3, :3]
    x0 = np.column_stack([pts0, np.ones(len(pts0))]) @ np.linalg.inv(K0).T
    x1 = np.column_stack([pts1, np.ones(len(pts1))]) @ np.linalg.inv(K1).T
    return np.abs(np.einsum("ni,ij,nj->n", x1, E, x0)) / max(np.linalg.norm(T[:3, 3]), 1e-12)


# ----------------------------------------------------------------------------- exact two-view geometry

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(-2, 2), st.floats(-1, 1), st.floats(-1.5, 1.5), st.floats(-2, 2), st.floats(-1, 1.5),
       st.floats(-1.5, 1.5), st.floats(-30, 30), st.floats(-30, 30), st.integers(0, 2 ** 31))
def test_plane_correspondences_obey_epipolar_constraint_and_homography(x0, y0, z0, x1, y1, z1, roll0, roll1, seed):
    rng = np.random.default_rng(seed)
    rects = wall_scene(rng).rects
    K0, K1 = scenes.intrinsics(rng, SMALL), scenes.intrinsics(rng, SMALL)
    pose0 = scenes.look_at((x0, y0, z0 + 1), (rng.uniform(-2, 2), 6, rng.uniform(-1, 3)), np.deg2rad(roll0))
    pose1 = scenes.look_at((x1, y1, z1 + 1), (rng.uniform(-2, 2), 6, rng.uniform(-1, 3)), np.deg2rad(roll1))
    T = pose1 @ np.linalg.inv(pose0)
    assume(np.linalg.norm(T[:3, 3]) > 0.05)
    depth0, _ = render.render_depth(rects, K0, pose0, SMALL)
    depth1, _ = render.render_depth(rects, K1, pose1, SMALL)
    pts0 = rng.uniform((0, 0), (SMALL[0] - 1, SMALL[1] - 1), size=(400, 2))  # sub-pixel, anywhere
    pts0 = pts0[np.isfinite(depth0[np.rint(pts0[:, 1]).astype(int), np.rint(pts0[:, 0]).astype(int)])]
    p1, vis = depth_truth.correspondences(pts0, depth0, K0, K1, T, depth1, depth1.shape)
    h = plane_homography(K0, K1, pose0, T, np.array([0, 1.0, 0]), 6.0)
    expected = apply_h(h, pts0)
    inner = np.all((expected > 2) & (expected < np.array(SMALL) - 3), axis=1)
    inner &= np.all((pts0 > 1) & (pts0 < np.array(SMALL) - 2), axis=1)  # away from the wall's own border too
    inner &= depth_truth._depth_at(depth0, pts0, 0.05)[1]  # all four depth neighbours on the wall
    assume(inner.sum() >= 5)
    assert vis[inner].all(), "an unoccluded plane point inside image 1 was called invisible"
    assert np.abs(p1[inner] - expected[inner]).max() < 1e-2
    assert epipolar_residual(pts0[vis], p1[vis], K0, K1, T).max() < 1e-5


def test_depth_maps_agree_between_views():
    for index in range(4):  # one pair of each kind, more or less
        pair = scenes.make_pair(11, index, SMALL, photometric=False)
        ys, xs = np.mgrid[2:SMALL[1]:5, 2:SMALL[0]:5]
        pts0 = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
        p1, vis = depth_truth.correspondences(pts0, pair.depth0, pair.K0, pair.K1, pair.T_0to1, pair.depth1,
                                              SMALL[::-1])
        assert vis.mean() > 0.2
        # depth of the reprojected point equals depth1 at its pixel far more tightly than the tolerance
        z1 = (pair.depth0[ys.ravel(), xs.ravel()][:, None] * np.column_stack([pts0, np.ones(len(pts0))])
              @ np.linalg.inv(pair.K0).T) @ pair.T_0to1[:3, :3].T + pair.T_0to1[:3, 3]
        d1, smooth, _ = depth_truth._depth_at(pair.depth1, p1[vis], 0.05)
        rel = np.abs(z1[vis, 2] - d1) / d1
        x0, y0 = (np.minimum(np.floor(p1[vis, i]).astype(int), SMALL[i] - 2) for i in (0, 1))
        x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
        source_id = pair.ids0[ys.ravel(), xs.ravel()][vis]
        one_surface = np.all([pair.ids1[y0 + dy, x0 + dx] == source_id for dy in (0, 1) for dx in (0, 1)], 0)
        assert one_surface.mean() > 0.9
        assert rel[one_surface].max() < 1e-4, "within one plane the interpolated depth is exact"
        assert np.mean(rel[smooth] < 1e-3) > 0.97  # creases (two planes meeting) are a little off
        # the same surface is hit, and the point comes back to where it started through depth1
        same = pair.ids1[np.rint(p1[vis, 1]).astype(int), np.rint(p1[vis, 0]).astype(int)] == source_id
        assert same.mean() > 0.95
        back, vis_back = depth_truth.correspondences(p1[vis], pair.depth1, pair.K1, pair.K0,
                                                     np.linalg.inv(pair.T_0to1), pair.depth0, SMALL[::-1])
        err = np.linalg.norm(back - pts0[vis], axis=1)
        assert vis_back.mean() > 0.97 and np.mean(err[vis_back] < 0.05) > 0.97


def test_box_hides_the_wall_behind_it_in_the_other_view():
    rng = np.random.default_rng(3)
    rects = wall_scene(rng, with_box=True).rects
    K = np.array([[250.0, 0, 159.5], [0, 250.0, 119.5], [0, 0, 1]])
    c0, c1 = np.array([-1.5, 0, 1]), np.array([1.5, 0, 1])
    pose0, pose1 = scenes.look_at(c0, (0, 6, 1)), scenes.look_at(c1, (0, 6, 1))
    T = pose1 @ np.linalg.inv(pose0)
    depth0, ids0 = render.render_depth(rects, K, pose0, SMALL)
    depth1, _ = render.render_depth(rects, K, pose1, SMALL)
    ys, xs = np.nonzero(ids0 == 0)  # wall pixels seen by camera 0
    pts0 = np.column_stack([xs, ys]).astype(np.float64)
    p1, vis = depth_truth.correspondences(pts0, depth0, K, K, T, depth1, depth1.shape)
    world = (depth0[ys, xs][:, None] * np.column_stack([pts0, np.ones(len(xs))]) @ np.linalg.inv(K).T
             - pose0[:3, 3]) @ pose0[:3, :3]
    assert np.allclose(world[:, 1], 6.0, atol=1e-4)

    def crosses(lo, hi):  # does the segment camera 1 -> wall point pass through the box (slab test)?
        d = world - c1
        with np.errstate(divide="ignore", invalid="ignore"):
            ta, tb = (lo - c1) / d, (hi - c1) / d
        tmin = np.nanmax(np.minimum(ta, tb), axis=1)
        tmax = np.nanmin(np.maximum(ta, tb), axis=1)
        return (tmax >= np.maximum(tmin, 0)) & (tmin <= 1)

    box_lo, box_hi = np.array([-0.5, 2.5, 0.5]), np.array([0.5, 3.5, 1.5])
    hidden = crosses(box_lo + 0.02, box_hi - 0.02)
    clear = ~crosses(box_lo - 0.02, box_hi + 0.02)
    inside = np.all((p1 > 1) & (p1 < np.array(SMALL) - 2), axis=1)
    assert hidden.sum() > 500, "the test set-up should hide a good part of the wall"
    assert not vis[hidden].any(), "wall points behind the box must be invisible in view 1"
    assert vis[clear & inside].all(), "wall points with a clear line of sight must be visible"
    # and camera 0 itself sees them: the occlusion is specific to view 1
    assert hidden.sum() < len(xs)


def test_depth_lookup_does_not_average_across_edges():
    depth = np.full((4, 4), 10.0, np.float32)
    depth[:, 2:] = 2.0
    value, smooth, _ = depth_truth._depth_at(depth, np.array([[1.4, 1.0], [1.6, 1.0], [0.5, 0.5]]), 0.05)
    assert np.allclose(value, [10.0, 2.0, 10.0]) and smooth.tolist() == [False, False, True]


def test_points_without_depth_or_outside_are_invisible():
    depth0 = np.full((20, 30), 5.0, np.float32)
    depth0[0, 0] = np.inf
    K = np.array([[30.0, 0, 14.5], [0, 30.0, 9.5], [0, 0, 1]])
    T = np.eye(4)
    T[0, 3] = -2.0  # camera 1 two metres to the right: points shift left by f * 2 / 5 = 12 px
    pts = np.array([[0, 0], [5, 5], [20, 5], [-3, 4], [29.6, 3]], np.float64)
    p1, vis = depth_truth.correspondences(pts, depth0, K, K, T, depth0, depth0.shape)
    assert vis.tolist() == [False, False, True, False, False]
    assert np.allclose(p1[2], [8, 5])
    assert np.isnan(p1[0]).all()


# ----------------------------------------------------------------------------- labels

def test_ground_truth_matches_thresholds_and_occlusion():
    rng = np.random.default_rng(4)
    rects = wall_scene(rng).rects
    K = np.array([[250.0, 0, 159.5], [0, 250.0, 119.5], [0, 0, 1]])
    pose0, pose1 = scenes.look_at((-0.5, 0, 1), (0, 6, 1)), scenes.look_at((0.5, 0.2, 1), (0, 6, 1))
    T = pose1 @ np.linalg.inv(pose0)
    d0, _ = render.render_depth(rects, K, pose0, SMALL)
    d1, _ = render.render_depth(rects, K, pose1, SMALL)
    h = plane_homography(K, K, pose0, T, np.array([0, 1.0, 0]), 6.0)
    k0 = np.array([[60.0, 60], [160, 120], [250, 180], [100, 200]])
    k1 = apply_h(h, k0) + np.array([[1.0, 0], [4.0, 0], [10.0, 0], [0.5, 0.5]])
    m0, m1 = depth_truth.ground_truth_matches(k0, k1, d0, d1, K, K, T)
    assert m0.tolist() == [0, -2, -1, 3] and m1.tolist() == [0, -2, -1, 3]
    m0, m1 = depth_truth.ground_truth_matches(k0, k1[:0], d0, d1, K, K, T)
    assert m0.tolist() == [-1] * 4 and m1.shape == (0,)


def test_ground_truth_matches_on_a_rendered_pair():
    pair = scenes.make_pair(2, 0, SMALL, photometric=False)
    rng = np.random.default_rng(0)
    k0 = rng.uniform((0, 0), (SMALL[0] - 1, SMALL[1] - 1), size=(300, 2))
    p1, vis = depth_truth.correspondences(k0, pair.depth0, pair.K0, pair.K1, pair.T_0to1, pair.depth1, SMALL[::-1])
    partners = np.flatnonzero(vis)
    perm = rng.permutation(len(partners))
    k1 = np.vstack([p1[partners[perm]] + rng.normal(0, 0.2, (len(partners), 2)),
                    rng.uniform((0, 0), SMALL, size=(50, 2))])
    m0, m1 = depth_truth.ground_truth_matches(k0, k1, pair.depth0, pair.depth1, pair.K0, pair.K1, pair.T_0to1)
    expected = np.full(len(k0), -1)
    expected[partners[perm]] = np.arange(len(partners))
    assert np.all(m0[~vis] == -1), "keypoints occluded or outside image 1 are clearly unmatched"
    assert np.mean(m0[vis] == expected[vis]) > 0.9
    matched = np.flatnonzero(m0 >= 0)
    assert np.all(m1[m0[matched]] == matched), "labels are mutual"
    assert m0.dtype == np.int64 and m1.dtype == np.int64


# ----------------------------------------------------------------------------- pairs

def test_photometric_change_alters_images_but_not_geometry():
    a = scenes.make_pair(7, 1, SMALL, photometric=True)
    b = scenes.make_pair(7, 1, SMALL, photometric=False)
    for name in ("depth0", "depth1", "K0", "K1", "T_0to1", "ids0", "ids1"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("image0", "image1"):
        diff = np.abs(getattr(a, name).astype(int) - getattr(b, name).astype(int))
        assert diff.mean() > 3, name
    # without photometric change the two views show a surface point with the same intensity
    ys, xs = np.mgrid[4:SMALL[1]:7, 4:SMALL[0]:7]
    pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
    p1, vis = depth_truth.correspondences(pts, b.depth0, b.K0, b.K1, b.T_0to1, b.depth1, SMALL[::-1])
    i0 = b.image0[ys.ravel(), xs.ravel()][vis].astype(float)
    i1 = cv2.remap(b.image1, p1[vis, 0].astype(np.float32)[None], p1[vis, 1].astype(np.float32)[None],
                   cv2.INTER_LINEAR)[0].astype(float)
    assert np.corrcoef(i0, i1)[0, 1] > 0.6


def test_same_seed_and_index_give_identical_pairs():
    a = scenes.make_pair(5, 2, SMALL)
    b = scenes.make_pair(5, 2, SMALL)
    c = list(scenes.generate(5, 3, SMALL))[2]
    for other in (b, c):
        for name in ("image0", "image1", "color0", "depth0", "depth1", "K0", "K1", "T_0to1", "ids0"):
            assert np.array_equal(getattr(a, name), getattr(other, name)), name
        assert a.kind == other.kind
    d = scenes.make_pair(5, 3, SMALL)
    assert not np.array_equal(a.T_0to1, d.T_0to1)


def test_textures_from_photographs():
    rng = np.random.default_rng(1)
    photos = [textures.procedural_texture(rng, 300, 400),
              cv2.cvtColor(textures.procedural_texture(rng, 200, 250), cv2.COLOR_GRAY2BGR)]
    for _ in range(5):
        t = textures.random_texture(photos, rng, 64, 96)
        assert t.shape[:2] == (64, 96) and t.dtype == np.uint8
    pair = scenes.make_pair(1, 0, SMALL, textures=photos)
    plain = scenes.make_pair(1, 0, SMALL)
    assert np.array_equal(pair.depth0, plain.depth0), "textures do not change the geometry"
    assert pair.color0.shape == SMALL[::-1] + (3,)


def test_pair_list_round_trips(tmp_path):
    pairs = [scenes.make_pair(9, i, SMALL) for i in range(2)]
    path = scenes.write_pair_list(str(tmp_path), pairs, ["a", "b"])
    lines = open(path).read().splitlines()
    assert len(lines) == 2
    for pair, (number, line) in zip(pairs, enumerate(lines, 1)):
        entry = parse_line(line, number)
        assert (entry.rot0, entry.rot1) == (0, 0) and len(line.split()) == 38
        assert np.array_equal(entry.truth.k0, pair.K0) and np.array_equal(entry.truth.k1, pair.K1)
        assert np.array_equal(entry.truth.t_0to1, pair.T_0to1)
        image0 = cv2.imread(str(tmp_path / entry.name0), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(image0, pair.image0)
        assert np.array_equal(np.load(scenes.depth_path(str(tmp_path / entry.name1))), pair.depth1)
    with pytest.raises(ValueError):
        parse_line("a b 0 0 1 2 3", 1)


@given(st.floats(100, 2000), st.floats(0, 640), st.floats(0, 480), st.lists(st.floats(-3, 3), min_size=6, max_size=6))
def test_pair_line_round_trips_exactly(focal, cx, cy, motion):
    k = np.array([[focal, 0, cx], [0, focal * 1.01, cy], [0, 0, 1]])
    transform = np.eye(4)
    transform[:3, :3], transform[:3, 3] = cv2.Rodrigues(np.array(motion[:3]))[0], motion[3:]
    entry = parse_line(format_line("x_0.png", "x_1.png", k, k, transform), 1)
    assert (entry.name0, entry.name1, entry.rot0, entry.rot1) == ("x_0.png", "x_1.png", 0, 0)
    assert np.array_equal(entry.truth.k0, k) and np.array_equal(entry.truth.t_0to1, transform)


def test_overlap_and_rotation_distribution_as_documented():
    rotations, ratios, kinds = [], [], set()
    for pair in scenes.generate(2024, 20, SMALL):
        valid0, valid1 = (~np.isin(ids, pair.backdrop_ids) & (ids >= 0) for ids in (pair.ids0, pair.ids1))
        overlap = depth_truth.covisibility(pair.depth0, pair.depth1, pair.K0, pair.K1, pair.T_0to1, valid0, valid1)
        assert pair.overlap >= 0.3 and overlap == pair.overlap
        rotations.append(scenes.rotation_deg(pair.T_0to1))
        ratios.append(np.linalg.norm(pair.T_0to1[:3, 3]) / np.median(pair.depth0[valid0]))
        kinds.add(pair.kind)
        # the epipolar constraint holds for every visible grid point of every generated pair
        ys, xs = np.mgrid[3:SMALL[1]:9, 3:SMALL[0]:9]
        pts = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
        p1, vis = depth_truth.correspondences(pts, pair.depth0, pair.K0, pair.K1, pair.T_0to1, pair.depth1, SMALL[::-1])
        assert epipolar_residual(pts[vis], p1[vis], pair.K0, pair.K1, pair.T_0to1).max() < 1e-5
    rotations = np.array(rotations)
    assert rotations.max() <= 75
    assert np.mean((rotations >= 10) & (rotations <= 45)) >= 0.6
    assert np.mean(np.array(ratios) >= 0.05) >= 0.9, "baselines give real parallax"
    assert kinds == set(scene_builder.KINDS)


def test_wide_baselines_rotate_at_least_the_minimum_with_parallax_and_occlusion():
    """``--min-rotation``: every pair turns by 35-75 degrees, and the scenes still overlap, with parallax."""
    from superglue_ros.cli.main import main

    pairs = list(scenes.generate(7, 6, SMALL, min_rotation_deg=35.0))
    rotations = [scenes.rotation_deg(pair.T_0to1) for pair in pairs]
    assert min(rotations) >= 35 and max(rotations) <= 75
    assert all(pair.overlap >= 0.3 and pair.T_0to1[:3, 3].any() for pair in pairs)
    assert main(["pairs", "scenes", "--out", "unused", "--min-rotation", "71"]) == 2


def test_rendered_ground_truth_scores_a_perfect_pose():
    """Known answers through the reference's scoring: matches taken from the depth ground truth give the
    true pose (errors near 0) and an epipolar precision of 1."""
    from superglue_ros.eval.scoring import pose_scores

    pair = scenes.make_pair(21, 0, SMALL)
    ys, xs = np.mgrid[8:SMALL[1]:16, 8:SMALL[0]:16]
    points0 = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
    points1, visible = depth_truth.correspondences(points0, pair.depth0, pair.K0, pair.K1, pair.T_0to1,
                                                   pair.depth1, pair.image1.shape)
    kpts0, kpts1 = points0[visible], points1[visible]
    assert len(kpts0) > 50
    scores = pose_scores(kpts0, kpts1, np.arange(len(kpts0)), pair.K0, pair.K1, pair.T_0to1)
    assert scores["error"] < 0.5 and scores["precision"] == 1.0 and scores["matching_score"] == 1.0
    shuffled = np.random.default_rng(0).permutation(len(kpts0))  # wrong partners: no pose, no precision
    wrong = pose_scores(kpts0, kpts1, shuffled, pair.K0, pair.K1, pair.T_0to1)
    assert wrong["precision"] < 0.2 and wrong["error"] > 10
