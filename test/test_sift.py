"""SIFT front end: Features contract, RootSIFT normalisation, determinism, repeatability under a warp."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from superglue_ros.models.sift import SIFT, root_sift
from superglue_ros.data.homographies import ground_truth_matches, warp_image


def textured(height: int = 240, width: int = 320, seed: int = 0) -> np.ndarray:
    """Blurred random blobs: plenty of scale-space extrema for SIFT."""
    noise = np.random.default_rng(seed).random((height // 8, width // 8)).astype(np.float32)
    image = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def test_features_contract() -> None:
    features = SIFT(max_keypoints=200).extract(textured())
    n = len(features)
    assert 50 < n <= 200
    assert features.image_size == (240, 320) and features.descriptor_dim == 128
    assert features.keypoints.dtype == torch.float32 and features.descriptors.dtype == torch.float32
    assert torch.allclose(features.descriptors.norm(dim=1), torch.ones(n), atol=1e-5)
    assert (features.descriptors >= 0).all()
    assert features.scores.max() == pytest.approx(1.0) and (features.scores >= 0).all()
    assert torch.all(features.scores[:-1] >= features.scores[1:])  # strongest first
    frames = features.scale_orientation
    assert frames is not None and frames.shape == (n, 2) and frames.dtype == torch.float32
    assert (frames[:, 0] > 0).all() and (frames[:, 1] >= 0).all() and (frames[:, 1] < 2 * np.pi).all()
    xy = features.keypoints
    assert (xy[:, 0] >= 0).all() and (xy[:, 0] < 320).all() and (xy[:, 1] >= 0).all() and (xy[:, 1] < 240).all()


def test_root_sift_is_the_square_root_of_the_l1_normalised_histogram() -> None:
    raw = np.array([[4.0, 0.0, 12.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    expected = np.array([[0.5, 0.0, np.sqrt(0.75), 0.0], [0.5, 0.5, 0.5, 0.5]])
    assert np.allclose(root_sift(raw), expected)


def test_float_tensor_and_uint8_inputs_agree_and_runs_repeat() -> None:
    image = textured(seed=1)
    sift = SIFT(max_keypoints=300)
    a = sift.extract(image)
    b = sift.extract(torch.from_numpy(image.astype(np.float32) / 255.0))
    c = SIFT(max_keypoints=300).extract(image)
    for x, y in ((a, b), (a, c)):
        assert torch.equal(x.keypoints, y.keypoints) and torch.equal(x.descriptors, y.descriptors)
        assert torch.equal(x.scores, y.scores)


def test_max_keypoints_keeps_the_strongest() -> None:
    image = textured(seed=2)
    many, few = SIFT(max_keypoints=400).extract(image), SIFT(max_keypoints=50).extract(image)
    assert len(few) == 50
    strongest = many.keypoints[:50]
    found = torch.cdist(few.keypoints, strongest).min(dim=1).values < 1e-3
    assert found.float().mean() > 0.9


def test_flat_and_empty_images_give_empty_features() -> None:
    flat = SIFT().extract(np.full((64, 64), 128, dtype=np.uint8))
    assert len(flat) == 0 and flat.image_size == (64, 64) and flat.descriptor_dim == 128
    assert len(SIFT().extract(np.zeros((0, 0), dtype=np.uint8))) == 0


def test_keypoints_repeat_under_a_known_warp() -> None:
    image = textured(480, 640, seed=3)
    h = np.array([[0.95, -0.1, 30.0], [0.1, 0.95, 10.0], [0.0, 0.0, 1.0]])
    sift = SIFT(max_keypoints=500)
    f0, f1 = sift.extract(image), sift.extract(warp_image(image, h))
    matches0, _ = ground_truth_matches(f0.keypoints.numpy(), f1.keypoints.numpy(), h)
    assert (matches0 >= 0).mean() > 0.3
    idx = np.nonzero(matches0 >= 0)[0]
    similarity = (f0.descriptors[idx] * f1.descriptors[matches0[idx]]).sum(dim=1)
    assert similarity.median() > 0.9  # RootSIFT of the same spot agrees across the warp


def test_scale_and_orientation_turn_with_the_image() -> None:
    """A quarter turn clockwise (y points down) adds 90 degrees to the orientation and keeps the scale."""
    image = textured(seed=4)
    sift = SIFT(max_keypoints=300)
    f0, f1 = sift.extract(image), sift.extract(cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE))
    xy = f0.keypoints.numpy()
    turned = np.stack([image.shape[0] - 1 - xy[:, 1], xy[:, 0]], axis=1)
    distance = np.linalg.norm(turned[:, None] - f1.keypoints.numpy()[None], axis=2)
    same = distance.min(axis=1) < 0.5
    assert same.sum() > 50
    frames0 = f0.scale_orientation.numpy()[same]
    frames1 = f1.scale_orientation.numpy()[distance.argmin(axis=1)[same]]
    ratio = frames1[:, 0] / frames0[:, 0]  # sub-pixel refinement differs a little on the turned grid
    assert abs(np.median(ratio) - 1) < 0.005 and np.all(np.abs(ratio - 1) < 0.05)
    turn = np.rad2deg(frames1[:, 1] - frames0[:, 1]) % 360
    assert np.mean(np.abs(turn - 90) < 3) > 0.7  # the rest took another of their dominant orientations


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_keypoints"):
        SIFT(max_keypoints=0)
    with pytest.raises(ValueError, match="gray"):
        SIFT().extract(np.zeros((8, 8, 3), dtype=np.uint8))
