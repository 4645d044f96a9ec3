"""Shared fixtures: paths to ../shared (golden data, real frames) and deterministic weights.

Tests that need ../shared skip with the reason when it is absent (a user's
fresh clone has none); everything else generates its own data.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from superglue_ros import SuperGlue, SuperPoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
FREIBURG_DIR = SHARED / "data" / "tum_freiburg"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only beside the project's own checkouts)")
    return path


def rule_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The deterministic weights of ../shared/README.md (golden/freiburg_pair.npz), from key names alone."""
    out = {}
    for key, value in model.state_dict().items():
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = value.shape
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key == "bin_score":
            out[key] = torch.tensor(1.0)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(shape, generator=gen)
        elif key == "final_proj.weight":
            out[key] = torch.eye(256).reshape(shape) + 0.02 * torch.randn(shape, generator=gen)
        elif value.ndim >= 2:
            gain = 0.25 if key.startswith("gnn.") else 0.05 if key.startswith("kenc.") else 1.0
            fan_in = int(np.prod(shape[1:]))
            out[key] = gain * torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key.endswith("weight"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=gen)
    return out


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test (small inputs, deterministic reductions), then as before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Deterministic SuperPoint/SuperGlue weight files in the official format (no ../shared needed)."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name, model in (("superpoint", SuperPoint()), ("superglue", SuperGlue())):
        files[name] = folder / f"{name}.pth"
        torch.save(rule_weights(model), files[name])
    return files


@pytest.fixture(scope="session")
def freiburg_frames() -> list[Path]:
    """Sorted paths of the real 640x480 TUM freiburg frames in ../shared."""
    return sorted(require(FREIBURG_DIR).glob("*.png"))
