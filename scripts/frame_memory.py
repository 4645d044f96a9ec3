"""Peak memory of matching one pair of W x H frames on the CPU, for the README's memory figures.

python scripts/frame_memory.py W H SUPERPOINT.pth SUPERGLUE.pth  (one size per process: peak RSS only grows)
"""
from __future__ import annotations

import resource
import sys
import time

import numpy as np

from superglue_ros.bench.speed import textured_image
from superglue_ros.inference.matcher import Matcher


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(width: int, height: int, superpoint: str, superglue: str) -> None:
    matcher = Matcher(superpoint_weights=superpoint, superglue_weights=superglue, max_image_pixels=1 << 28)
    small = textured_image(np.random.default_rng(0), 120, 160)
    matcher.match(small, small)
    loaded = peak_mib()
    image = textured_image(np.random.default_rng(1), height, width)
    start = time.monotonic()
    matcher.match(image, np.roll(image, 8, axis=1))
    print(f"{width}x{height} {width * height / 1e6:.1f} MP: peak RSS {peak_mib():.0f} MiB (models loaded: "
          f"{loaded:.0f} MiB), {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
