"""The pair-list format of the SuperGlue reference's ``match_pairs.py``: one image pair per line.

``name0 name1 [rot0 rot1 [K0(9) K1(9) T_0to1(16)]]``, whitespace between
fields, matrices row-major; ``rot`` counts quarter turns (``np.rot90``) of an
image, and T_0to1 maps camera-0 coordinates to camera-1 coordinates. The
ScanNet-1500, YFCC-4000 and MegaDepth test lists use it, and so do the pair
lists this package renders (:mod:`.scenes`) or assembles from real stereo
data (:mod:`.real_pairs`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FIELDS_WITH_TRUTH = 2 + 2 + 9 + 9 + 16


@dataclass(frozen=True)
class PoseTruth:
    """Intrinsics of both images and the pose from camera 0 to camera 1 (x1 = R x0 + t)."""

    k0: np.ndarray
    k1: np.ndarray
    t_0to1: np.ndarray


@dataclass(frozen=True)
class PairEntry:
    """One line of a pair list: image names, 90-degree turns and, when present, the ground truth."""

    name0: str
    name1: str
    rot0: int = 0
    rot1: int = 0
    truth: PoseTruth | None = None


def parse_line(line: str, number: int) -> PairEntry:
    """One pair line; ValueError naming the line and the field otherwise.

    Intrinsics must be [[fx 0 cx] [0 fy cy] [0 0 1]] with positive focal
    lengths, T_0to1 a rigid transform; rotations are whole turns in 0..3.
    """
    fields = line.split()
    where = f"line {number}"
    if len(fields) not in (2, 4, FIELDS_WITH_TRUTH):
        raise ValueError(f"{where}: expected 2, 4 or {FIELDS_WITH_TRUTH} fields (names, rotations, K0, K1, "
                         f"T_0to1), got {len(fields)}")
    turns = [0, 0]
    for i, text in enumerate(fields[2:4]):
        if not text.lstrip("-").isdigit() or not 0 <= int(text) <= 3:
            raise ValueError(f"{where}: rot{i} must be a whole number of 90-degree turns in 0..3, got {text!r}")
        turns[i] = int(text)
    if len(fields) != FIELDS_WITH_TRUTH:
        return PairEntry(fields[0], fields[1], *turns)
    k0, k1 = (_intrinsics(fields[start:start + 9], f"{where}: K{i}") for i, start in ((0, 4), (1, 13)))
    t_0to1 = _numbers(fields[22:], f"{where}: T_0to1").reshape(4, 4)
    rotation = t_0to1[:3, :3]
    if list(t_0to1[3]) != [0, 0, 0, 1] or np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or \
            np.linalg.det(rotation) <= 0:
        raise ValueError(f"{where}: T_0to1 must be a rigid transform [[R t] [0 0 0 1]], got {t_0to1.tolist()}")
    return PairEntry(fields[0], fields[1], *turns, PoseTruth(k0, k1, t_0to1))


def _numbers(fields: Sequence[str], what: str) -> np.ndarray:
    try:
        values = np.array([float(field) for field in fields])
    except ValueError:
        raise ValueError(f"{what} holds something that is not a number: {' '.join(fields)}") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} holds a non-finite number: {' '.join(fields)}")
    return values


def _intrinsics(fields: Sequence[str], what: str) -> np.ndarray:
    k = _numbers(fields, what).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[0, 1] != 0 or k[1, 0] != 0 or list(k[2]) != [0, 0, 1]:
        raise ValueError(f"{what} must be [[fx 0 cx] [0 fy cy] [0 0 1]] with fx, fy > 0, got {k.tolist()}")
    return k


def format_line(name0: str, name1: str, k0: np.ndarray, k1: np.ndarray, t_0to1: np.ndarray,
                rot0: int = 0, rot1: int = 0) -> str:
    """One line with ground truth; numbers as ``repr``, the shortest text that parses back to the same float."""
    numbers = np.concatenate([np.ravel(k0), np.ravel(k1), np.ravel(t_0to1)]).astype(np.float64)
    return " ".join([name0, name1, str(rot0), str(rot1)] + [repr(float(x)) for x in numbers])
