"""Preprocessing from the 8-bit frame on the device agrees with the exact CPU path (run here on the CPU)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from superglue_ros.inference.device_preprocess import Converter, Staging, checked_8bit
from superglue_ros.inference.dispatch_count import DispatchCounter
from superglue_ros.inference.preprocess import resize_gray, to_gray_float

CPU = torch.device("cpu")
CV2_GRAY = {("bgr", 3): cv2.COLOR_BGR2GRAY, ("rgb", 3): cv2.COLOR_RGB2GRAY,
            ("bgr", 4): cv2.COLOR_BGRA2GRAY, ("rgb", 4): cv2.COLOR_RGBA2GRAY}


def random_frame(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def preprocess(frame: np.ndarray, shape_hw: tuple[int, int] | None = None, order: str = "bgr") -> np.ndarray:
    """The frame checked, staged and converted as the fixed path does (to its own size without shape_hw)."""
    frame = checked_8bit(frame, order)
    uploaded = Staging(CPU, frame.shape).upload(frame)
    return Converter(CPU, order)(uploaded, shape_hw or frame.shape[:2]).numpy()


@pytest.mark.parametrize("order, channels", list(CV2_GRAY))
def test_grey_matches_the_exact_path_and_opencv(order, channels):
    frame = random_frame((47, 61, channels), seed=channels)
    grey = preprocess(frame, order=order)
    assert grey.shape == (47, 61) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, to_gray_float(frame, order), rtol=0, atol=1e-6)
    opencv = cv2.cvtColor(frame, CV2_GRAY[(order, channels)]).astype(np.float32) / 255
    assert np.abs(grey - opencv).max() <= 1 / 255


@pytest.mark.parametrize("shape", [(47, 61), (47, 61, 1)])
def test_mono_frames_are_only_scaled(shape):
    frame = random_frame(shape)
    np.testing.assert_array_equal(preprocess(frame), to_gray_float(frame))


@pytest.mark.parametrize("target", [(24, 32), (96, 128), (47, 61), (30, 100)])
def test_resize_matches_the_exact_path_with_a_fixed_output_shape(target):
    frame = random_frame((47, 61, 3))
    network = preprocess(frame, target)
    assert network.shape == target
    np.testing.assert_allclose(network, resize_gray(to_gray_float(frame), target), rtol=0, atol=1e-5)


def test_conversion_is_capturable_no_syncs_no_host_built_tensors():
    frame = random_frame((47, 61, 3))
    uploaded = Staging(CPU, frame.shape).upload(frame)
    convert = Converter(CPU)
    with DispatchCounter() as counter:
        convert(uploaded, (24, 32))
    assert counter.counts.total_syncs == 0 and counter.counts.total_host_built == 0
    assert 0 < counter.counts.total_operations - counter.counts.total_views <= 6  # kernels: cast, scale, grey, resize


def test_bad_frames_and_settings_are_refused():
    with pytest.raises(ValueError, match="8-bit"):
        preprocess(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        preprocess(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="channel_order"):
        Converter(CPU, channel_order="yuv")
