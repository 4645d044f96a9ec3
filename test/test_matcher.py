"""Matcher pipeline: preprocessing of every input encoding, resize mapping, caching, devices, weights."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from superglue_ros import Features, Matcher
from superglue_ros.inference.matcher import resolve_device, to_original_pixels
from superglue_ros.inference.preprocess import resize_gray, resized_shape, to_gray_float
from superglue_ros.inference.weights import WeightsError


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A 240x320 BGR image with blobs and edges at many scales."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC)
    for _ in range(25):
        x, y = rng.integers(10, 300), rng.integers(10, 220)
        cv2.rectangle(image, (int(x), int(y)), (int(x) + 12, int(y) + 9), tuple(int(v)
                      for v in rng.integers(0, 256, 3)), -1)
    return image


@pytest.fixture(scope="module")
def matcher(weight_files) -> Matcher:
    return Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                   extractor={"max_keypoints": 200}, superglue={"sinkhorn_iterations": 20, "match_threshold": 0.0})


@pytest.mark.parametrize("convert, order", [
    (lambda bgr: bgr, "bgr"),
    (lambda bgr: bgr[:, :, ::-1].copy(), "rgb"),
    (lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), "bgr"),
    (lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA), "rgb"),
    (lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "bgr"),
    (lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[:, :, None], "bgr"),
])
def test_every_8bit_encoding_gives_the_same_gray(scene, convert, order):
    expected = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    np.testing.assert_allclose(to_gray_float(convert(scene), order), expected, atol=1 / 255 + 1e-6)


def test_16bit_and_float_inputs_are_scaled_to_unit_range():
    mono16 = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    np.testing.assert_allclose(to_gray_float(mono16), mono16 / 65535, rtol=1e-6)
    np.testing.assert_allclose(to_gray_float(np.array([[-1.0, 2.0]], dtype=np.float64)), [[0.0, 1.0]])


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 5), np.uint8), "empty"),
    (np.zeros((4, 4, 2), np.uint8), r"got \(4, 4, 2\)"),
    (np.zeros((4, 4), np.int32), "dtype"),
])
def test_bad_images_are_rejected_with_reasons(image, message):
    with pytest.raises(ValueError, match=message):
        to_gray_float(image)


def test_resized_shape_rules():
    assert resized_shape(480, 640, None) == (480, 640)
    assert resized_shape(480, 640, (320, 240)) == (240, 320)
    assert resized_shape(480, 640, 320) == (240, 320)


def test_keypoints_map_back_to_original_pixels(matcher, weight_files, scene):
    big = cv2.resize(scene, (640, 480), interpolation=cv2.INTER_LINEAR)
    resized = Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                      resize=(320, 240), extractor={"max_keypoints": 200})
    at_original = resized.extract(big)
    at_network = matcher.extract(resize_gray(to_gray_float(big), (240, 320)))
    assert at_original.image_size == (480, 640)
    expected = (at_network.keypoints + 0.5) * 2 - 0.5
    torch.testing.assert_close(at_original.keypoints, expected, atol=1e-4, rtol=0)


def test_stream_runs_superpoint_once_per_frame(matcher, scene, monkeypatch):
    calls = []
    original = matcher.extractor.extract
    monkeypatch.setattr(matcher.extractor, "extract",  # counts frames: a batch (B, 1, H, W) is B of them
                        lambda image: calls.append(1 if image.ndim == 2 else image.shape[0]) or original(image))
    frames = [np.roll(scene, shift, axis=1) for shift in range(0, 20, 4)]
    matcher.clear_cache()
    for i in range(1, len(frames)):
        pair = matcher.match(frames[i - 1], frames[i], key0=i - 1, key1=i)
        assert pair.timings.keys() >= {"preprocess", "extract", "match"}
    assert sum(calls) == len(frames)


def test_cache_is_bounded(weight_files, scene):
    small = Matcher(superpoint_weights=weight_files["superpoint"], superglue_weights=weight_files["superglue"],
                    cache_size=2, extractor={"max_keypoints": 50})
    for key in range(5):
        small.extract(scene, key=key)
    assert list(small._cache) == [3, 4]


def test_matching_a_frame_with_a_shifted_copy_recovers_the_shift(matcher, scene):
    """Even deterministic (untrained) weights match a pure translation: descriptors are identical."""
    shifted = np.zeros_like(scene)
    shifted[:, 16:] = scene[:, :-16]
    pair = matcher.match(scene, shifted)
    points0, points1, confidences = pair.matched_points()
    assert len(confidences) > 0 and pair.features0.image_size == (240, 320)
    inner = (points0[:, 0] > 24) & (points0[:, 0] < 296)
    assert np.median(points1[inner, 0] - points0[inner, 0]) == pytest.approx(16, abs=0.5)


def test_device_errors_are_clear():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_missing_weights_name_file_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERGLUE_ROS_WEIGHTS_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsError) as error:
        Matcher(weights="indoor", weights_dir=tmp_path / "explicit")
    message = str(error.value)
    for part in ("superpoint_v1.pth", "explicit", "env", "home", "superglue-ros weights download",
                 "non-commercial", "github.com/magicleap/SuperGluePretrainedNetwork"):
        assert part in message


def test_invalid_matcher_options(weight_files):
    kwargs = {"superpoint_weights": weight_files["superpoint"], "superglue_weights": weight_files["superglue"]}
    for bad, message in (({"resize": (0, 10)}, "resize width"), ({"weights": "attic"}, "weights"),
                         ({"cache_size": -1}, "cache_size"), ({"extractor": {"nms_radius": -2}}, "nms_radius")):
        with pytest.raises(ValueError, match=message):
            Matcher(**kwargs, **bad)


def test_identity_of_mapping_without_resize(matcher, scene):
    features = matcher.extract(scene)
    assert to_original_pixels(features, features.image_size) is features


def test_keypoint_diameters_scale_with_the_image_and_orientations_stay():
    frames = torch.tensor([[4.0, 0.5], [10.0, 3.0]])
    small = Features(torch.tensor([[10.0, 20.0], [0.0, 0.0]]), torch.ones(2), torch.ones(2, 4), (100, 150), frames)
    big = to_original_pixels(small, (200, 300))
    assert torch.allclose(big.scale_orientation, torch.tensor([[8.0, 0.5], [20.0, 3.0]]))
    assert torch.allclose(big.keypoints, torch.tensor([[20.5, 40.5], [0.5, 0.5]]))


def test_open_model_file_is_used_by_path_and_auto_falls_back_with_a_notice(tmp_path, monkeypatch, caplog):
    """A model written by training loads by path; with no official weights, auto takes the bundled one."""
    from superglue_ros.inference.model_files import BUNDLED, save_open_model
    from superglue_ros.models.superglue import SuperGlue

    superglue = SuperGlue(descriptor_dim=128, keypoint_encoder=[16, 32], GNN_layers=["self", "cross"],
                          sinkhorn_iterations=10)
    path = tmp_path / "tiny.pt"
    save_open_model(path, superglue, {"name": "sift", "max_keypoints": 200}, {"note": "test"})
    matcher = Matcher(weights=str(path), extractor={"max_keypoints": 50}, superglue={"match_threshold": 0.0})
    assert matcher.model_name == "sift+superglue_tiny" and matcher.extractor.config["max_keypoints"] == 50
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((120, 160)) * 255).astype(np.uint8), (0, 0), 1.5)
    pair = matcher.match(image, image)
    assert 0 < len(pair.features0) <= 50 and pair.features0.descriptors.shape[1] == 128
    if not BUNDLED["sift_open"].is_file():
        pytest.skip("the bundled sift_open model is not in this checkout")
    monkeypatch.setenv("SUPERGLUE_ROS_WEIGHTS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with caplog.at_level("WARNING", logger="superglue_ros"):
        fallback = Matcher(weights_dir=tmp_path / "none")
    assert fallback.model_name == "sift+superglue_sift_open"
    assert "using the bundled open model sift_open" in caplog.text and "weights download" in caplog.text
