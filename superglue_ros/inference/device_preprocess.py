"""Preprocessing on the device from the uploaded 8-bit frame: one small copy, then fixed-shape kernels.

Uploading the camera's 8-bit frame moves a quarter of the bytes of a float
image, and converting and resizing on the device keeps the host out of the
per-frame path. The frame goes through a pinned staging buffer, so the copy
is asynchronous; the buffer is refilled, or let go, only after the device
has read the previous frame from it. Grey conversion and bilinear resizing
follow the exact CPU path (:mod:`.preprocess`): OpenCV's BT.601 weights
applied to the values scaled to [0, 1], then resizing with pixel centres
aligned and the border replicated, as ``cv2.INTER_LINEAR`` does; the results
agree to float rounding. Output shapes depend only on the frame's shape, so
the conversion can be captured in a CUDA graph.

The two halves have different lifetimes, hence two classes: a
:class:`Staging` buffer belongs to one frame shape and may go when that shape
stops coming (no graph reads it), while the :class:`Converter`'s weights are
read by every graph that captured a conversion, of any size, and must
outlive them.
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


def checked_8bit(frame: np.ndarray, channel_order: str) -> np.ndarray:
    """The frame as (H, W) or (H, W, 3|4) uint8 (see ``checked_frame``): staging buffers and the
    conversion's scale are 8-bit."""
    frame = checked_frame(frame, channel_order)
    if frame.dtype != np.uint8:
        raise ValueError(f"device preprocessing takes 8-bit frames, got {frame.dtype}; use to_gray_float")
    return frame


class Staging:
    """``Staging(device, shape).upload(frame)``: an 8-bit frame of that shape on ``device``.

    On CUDA through a pinned host buffer, so the copy is asynchronous; on the
    CPU there is nothing to stage. Call :meth:`wait` before letting it go: the
    buffer must not be freed while the device may still be reading it.
    """

    def __init__(self, device: torch.device, shape: tuple[int, ...]) -> None:
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self._buffer = torch.empty(shape, dtype=torch.uint8, pin_memory=True) if cuda else None
        self._read: torch.cuda.Event | None = None

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        """The checked frame (:func:`checked_8bit`) as a device tensor of its own (the buffer is reused)."""
        if self._buffer is None:
            # np.require copies a read-only frame (a ROS message's buffer): a tensor never shares one
            return torch.from_numpy(np.require(frame, requirements=("C", "W"))).to(self.device)
        self.wait()  # the previous frame's copy has left the buffer
        np.copyto(self._buffer.numpy(), frame)
        uploaded = self._buffer.to(self.device, non_blocking=True)
        self._read = torch.cuda.Event()
        self._read.record(torch.cuda.current_stream(self.device))  # the copy's stream, also on cuda:N
        return uploaded

    def wait(self) -> None:
        """Block until the last copy out of the buffer is done, so that it may be refilled or freed."""
        if self._read is not None:
            self._read.synchronize()


class Converter:
    """``Converter(device, channel_order)(frame, (H, W))``: an uploaded 8-bit frame as the (H, W) float32
    network input in [0, 1], grey, then resized.

    One serves every size, since only the output size (a kernel argument, not a tensor) depends on it:
    its one tensor, the grey weights, is then kept as long as its owner, and so outlives every CUDA graph
    the owner captured around a conversion (a replay reads the weights where they were at capture).
    channel_order: "bgr" or "rgb" for colour frames (a fourth channel is ignored).
    """

    def __init__(self, device: torch.device, channel_order: str = "bgr") -> None:
        checked_frame(np.zeros((1, 1), np.uint8), channel_order)
        self._weights = torch.tensor(gray_weights(channel_order), dtype=torch.float32, device=device)

    def __call__(self, frame: torch.Tensor, shape_hw: tuple[int, int]) -> torch.Tensor:
        image = frame.to(torch.float32) / 255.0
        if image.dim() == 3:
            image = image[..., :3] @ self._weights
        if tuple(image.shape) == tuple(shape_hw):
            return image
        return F.interpolate(image[None, None], size=shape_hw, mode="bilinear", align_corners=False)[0, 0]
