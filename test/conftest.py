"""Shared fixtures: paths to ../shared (golden data, real frames) and deterministic weights.

Tests that need ../shared skip with the reason when it is absent (a user's
fresh clone has none); everything else generates its own data.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from superglue_ros import SuperGlue, SuperPoint
# The deterministic weights of ../shared/README.md (golden/freiburg_pair.npz), from key names alone.
from superglue_ros.inference.weights import deterministic_weights as rule_weights  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"
FREIBURG_DIR = SHARED / "data" / "tum_freiburg"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only beside the project's own checkouts)")
    return path


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
