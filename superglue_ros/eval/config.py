"""What an evaluation replays and how it pairs and scores it, checked before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..data.homographies import MAX_STRENGTH
from ..inference.pipeline import HomographySettings
from ..parameters import BY_NAME
from ..settings import SEED, Setting, check_all

REFERENCE_RESIZE = (640, 480)  # the reference's match_pairs.py default for pair lists

# Every eval option with a value, declared once: the command line is made from these and the config checked
# against them (the stereo `slop` is the node's parameter).
MODE = Setting("mode", str, "sequential", "sequential: each selected frame against the previous selected one; "
               "stereo: --topic against --topic1", choices=("sequential", "stereo"))
STRIDE = Setting("stride", int, 1, "use every K-th frame of --topic", 1)
MAX_PAIRS = Setting("max_pairs", int, None, "stop after N pairs", 1)
MAX_BAD_FRAMES = Setting("max_bad_frames", int, None, "fail the run once more than N frames could not be "
                         "decoded or paired (default: no limit; they are skipped and counted)", 0)
STORAGE = Setting("storage", str, "sqlite3", "output bag storage", choices=("sqlite3", "mcap"))
STRENGTH = Setting("strength", float, 1.0, "warp strength", 0.0, MAX_STRENGTH)
WARPS = Setting("warps", int, 1, "random warps per frame, each one pair", 1)
GT_TOLERANCE = Setting("gt_tolerance", float, 0.05, "max stamp difference between a frame and its pose [s]", 0.0)
SOURCE_SETTINGS = (MODE, STRIDE, MAX_PAIRS, MAX_BAD_FRAMES, STORAGE)
SYNTHETIC_SETTINGS = (STRENGTH, WARPS, SEED)
POSE_SETTINGS = (GT_TOLERANCE,)
SETTINGS = (*SOURCE_SETTINGS, *SYNTHETIC_SETTINGS, *POSE_SETTINGS, BY_NAME["slop"].setting)


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
    mode: str = MODE.default
    stride: int = STRIDE.default
    max_pairs: int | None = MAX_PAIRS.default
    synthetic: bool = False
    strength: float = STRENGTH.default
    warps: int = WARPS.default
    seed: int = SEED.default
    photometric: bool = True
    homography: HomographySettings = field(default_factory=HomographySettings)
    slop: float = BY_NAME["slop"].default
    gt_topic: str | None = None
    camera_info_topic: str | None = None
    gt_tolerance: float = GT_TOLERANCE.default
    storage: str = STORAGE.default
    images: str | None = None
    resize: tuple[int, ...] | None = None
    max_bad_frames: int | None = MAX_BAD_FRAMES.default
    matches_topic: str = "/superglue/matches"
    homography_topic: str = "/superglue/homography"
    visualisations: int = 3

    @property
    def pair_list(self) -> bool:
        return self.images is not None

    def check(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        try:
            check_all([s for s in SETTINGS if values.get(s.name) is not None], values)
        except ValueError as error:
            raise EvalError(f"--{str(error).replace('_', '-')}") from None
        problems = [problem for problem in self._problems() if problem]
        if problems:
            raise EvalError(problems[0])

    def _problems(self) -> list[str]:
        """What no single setting can say: options that only make sense together."""
        bag_only = "with a bag or image folder, not a pair list"
        return [
            "--mode stereo needs --topic1 (the second camera)" if self.mode == "stereo" and not self.topic1 else "",
            "--topic1 is only used with --mode stereo" if self.mode == "sequential" and self.topic1 else "",
            "--synthetic-homography warps single frames; use it with --mode sequential"
            if self.synthetic and self.mode == "stereo" else "",
            "--gt-topic scores sequential pairs of one camera; not with stereo or synthetic mode"
            if self.gt_topic and (self.mode != "sequential" or self.synthetic) else "",
            "--warps is the number of random warps per frame in --synthetic-homography mode"
            if self.warps > 1 and not self.synthetic else "",
            f"a pair list is scored on its own ground truth; --synthetic-homography, --mode stereo, --topic "
            f"and --gt-topic are used {bag_only}"
            if self.pair_list and (self.synthetic or self.mode != "sequential" or self.topic or self.gt_topic) else "",
        ]
