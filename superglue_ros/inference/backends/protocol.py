"""What the Matcher needs of a backend: an extractor and a matcher with these few methods.

The torch models (``SuperPoint``, ``SIFT``, ``SuperGlue``) satisfy the
protocols as they are; the onnxruntime runners implement the same methods
around exported graphs, so the Matcher, the node and the evaluation never
ask which backend they hold.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ...models.types import Features, MatchResult


class Extractor(Protocol):
    """Keypoints and descriptors of gray images: SuperPoint, SIFT or a runner of an exported SuperPoint."""

    config: dict[str, Any]

    def extract(self, image: torch.Tensor) -> Features | list[Features]:
        """(H, W) float tensor in [0, 1] -> Features; (B, 1, H, W) -> one Features per image."""

    def configure(self, **changes: Any) -> None:
        """Change settings between frames; ValueError (nothing changed) for a value or a setting it refuses."""


class PairMatcher(Protocol):
    """SuperGlue, or a runner of an exported SuperGlue."""

    config: dict[str, Any]

    def match(self, features0: Features | Sequence[Features], features1: Features | Sequence[Features],
              timings: dict[str, float] | None = None) -> MatchResult | list[MatchResult]:
        """One pair, or two equal-length sequences matched as a batch."""

    def configure(self, **changes: Any) -> None:
        """Change settings between pairs; ValueError (nothing changed) for a value or a setting it refuses."""
