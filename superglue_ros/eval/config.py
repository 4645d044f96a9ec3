"""What an evaluation replays and how it pairs and scores it, checked before any work starts."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..data.homographies import MAX_STRENGTH
from ..inference.pipeline import HomographySettings

MODES = ("sequential", "stereo")
REFERENCE_RESIZE = (640, 480)  # the reference's match_pairs.py default for pair lists


class EvalError(Exception):
    """The evaluation cannot run as configured; one line for the user."""


@dataclass(frozen=True)
class EvalConfig:
    """The command-line options of ``eval``, validated.

    ``source`` is a bag, a folder of images or a pair list (with ``images``,
    the folder its names are relative to). ``resize`` is the pair list's
    network size (W, H), applied to images, intrinsics and scores as the
    reference does; other sources resize through the matcher.
    """

    source: str
    topic: str = ""
    topic1: str | None = None
    mode: str = "sequential"
    stride: int = 1
    max_pairs: int | None = None
    synthetic: bool = False
    strength: float = 1.0
    warps: int = 1
    seed: int = 0
    photometric: bool = True
    homography: HomographySettings = field(default_factory=HomographySettings)
    slop: float = 0.02
    gt_topic: str | None = None
    camera_info_topic: str | None = None
    gt_tolerance: float = 0.05
    storage: str = "sqlite3"
    images: str | None = None
    resize: tuple[int, ...] | None = None
    max_bad_frames: int | None = None
    matches_topic: str = "/superglue/matches"
    homography_topic: str = "/superglue/homography"
    visualisations: int = 3

    @property
    def pair_list(self) -> bool:
        return self.images is not None

    def check(self) -> None:
        problems = [problem for problem in self._problems() if problem]
        if problems:
            raise EvalError(problems[0])

    def _problems(self) -> list[str]:
        bag_only = "with a bag or image folder, not a pair list"
        return [
            "" if self.mode in MODES else f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}",
            "" if self.stride >= 1 else f"--stride must be >= 1, got {self.stride}",
            "" if self.max_pairs is None or self.max_pairs >= 1 else f"--max-pairs must be >= 1, got {self.max_pairs}",
            "" if self.max_bad_frames is None or self.max_bad_frames >= 0 else
            f"--max-bad-frames must be >= 0, got {self.max_bad_frames}",
            "--mode stereo needs --topic1 (the second camera)" if self.mode == "stereo" and not self.topic1 else "",
            "--topic1 is only used with --mode stereo" if self.mode == "sequential" and self.topic1 else "",
            "--synthetic-homography warps single frames; use it with --mode sequential"
            if self.synthetic and self.mode == "stereo" else "",
            "--gt-topic scores sequential pairs of one camera; not with stereo or synthetic mode"
            if self.gt_topic and (self.mode != "sequential" or self.synthetic) else "",
            "" if self.warps >= 1 else f"--warps must be >= 1, got {self.warps}",
            "--warps is the number of random warps per frame in --synthetic-homography mode"
            if self.warps > 1 and not self.synthetic else "",
            "" if math.isfinite(self.strength) and 0 <= self.strength <= MAX_STRENGTH else
            f"--strength must be a number in [0, {MAX_STRENGTH:g}], got {self.strength}",
            "" if math.isfinite(self.slop) and 0 <= self.slop <= 10 else
            f"--sync-tolerance must be a number in [0, 10] seconds, got {self.slop}",
            "" if math.isfinite(self.gt_tolerance) and self.gt_tolerance >= 0 else
            f"--gt-tolerance must be a finite number >= 0, got {self.gt_tolerance}",
            f"a pair list is scored on its own ground truth; --synthetic-homography, --mode stereo, --topic "
            f"and --gt-topic are used {bag_only}"
            if self.pair_list and (self.synthetic or self.mode != "sequential" or self.topic or self.gt_topic) else "",
        ]
