"""Preprocessing on the device from the uploaded 8-bit frame: one small copy, then fixed-shape kernels.

Uploading the camera's 8-bit frame moves a quarter of the bytes of a float
image, and converting and resizing on the device keeps the host out of the
per-frame path. The frame goes through a pinned staging buffer, so the copy
is asynchronous; the buffer is refilled only after the device has read the
previous frame from it. Grey conversion and bilinear resizing follow the
exact CPU path (:mod:`.preprocess`): OpenCV's BT.601 weights applied to the
values scaled to [0, 1], then resizing with pixel centres aligned and the
border replicated, as ``cv2.INTER_LINEAR`` does; the results agree to float
rounding. Output shapes depend only on the frame's shape, so the
conversion can be captured in a CUDA graph.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import checked_frame

# OpenCV's COLOR_BGR2GRAY / COLOR_RGB2GRAY (ITU-R BT.601): 0.299 R + 0.587 G + 0.114 B.
BT601_BGR = (0.114, 0.587, 0.299)


def gray_weights(channel_order: str) -> tuple[float, float, float]:
    """Weights of the first three channels, in the frame's order."""
    return BT601_BGR if channel_order == "bgr" else BT601_BGR[::-1]


class DevicePreprocess:
    """``DevicePreprocess(device, (H, W))(frame)``: the (H, W) float32 network input on ``device``.

    shape_hw: network input size, None to keep each frame's size.
    channel_order: "bgr" or "rgb" for colour frames (a fourth channel is ignored).
    """

    def __init__(self, device: torch.device, shape_hw: tuple[int, int] | None = None,
                 channel_order: str = "bgr") -> None:
        checked_frame(np.zeros((1, 1), np.uint8), channel_order)
        self.device = torch.device(device)
        self.shape_hw = None if shape_hw is None else (int(shape_hw[0]), int(shape_hw[1]))
        self.channel_order = channel_order
        self._weights = torch.tensor(gray_weights(channel_order), dtype=torch.float32, device=self.device)
        self._staging: torch.Tensor | None = None
        self._read: torch.cuda.Event | None = None

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        return self.convert(self.upload(frame))

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        """The uint8 frame on the device; on CUDA an asynchronous copy from the pinned staging buffer."""
        frame = checked_frame(frame, self.channel_order)
        if frame.dtype != np.uint8:
            raise ValueError(f"device preprocessing takes 8-bit frames, got {frame.dtype}; use to_gray_float")
        if self.device.type != "cuda":
            # np.require copies a read-only frame (a ROS message's buffer): a tensor never shares one
            return torch.from_numpy(np.require(frame, requirements=("C", "W"))).to(self.device)
        if self._staging is None or tuple(self._staging.shape) != frame.shape:
            self._staging = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
            self._read = None
        if self._read is not None:
            self._read.synchronize()  # the previous frame's copy has left the staging buffer
        np.copyto(self._staging.numpy(), frame)
        uploaded = self._staging.to(self.device, non_blocking=True)
        self._read = torch.cuda.Event()
        self._read.record(torch.cuda.current_stream(self.device))  # the copy's stream, also on cuda:N
        return uploaded

    def convert(self, frame: torch.Tensor) -> torch.Tensor:
        """(H, W) or (H, W, 3|4) uint8 on the device -> (H', W') float32 in [0, 1]: grey, then resized."""
        image = frame.to(torch.float32) / 255.0
        if image.dim() == 3:
            image = image[..., :3] @ self._weights
        if self.shape_hw is None or tuple(image.shape) == self.shape_hw:
            return image
        return F.interpolate(image[None, None], size=self.shape_hw, mode="bilinear", align_corners=False)[0, 0]
