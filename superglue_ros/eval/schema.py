"""The metrics.json document as typed objects: written by ``eval``, read by ``eval-compare`` and the report.

One module knows the file's layout, so a reader asks for
``summary.pose.superglue.auc["10deg"]`` instead of walking string paths, and
a file from an older version, or one that is not an eval output at all, is
recognised in one place. Version 3 names the stages as the pipeline does
(``extract``, ``match``; 1 and 2 said ``superpoint``/``features`` and
``superglue``), scores pose baselines and precision, and counts skipped
frames; version 4 adds 95% intervals to every matcher's pose AUCs and
precision (``auc_ci95``, ``precision_ci95``) and says how they were drawn
(``summary.pose.intervals``). Older files are upgraded when read.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files.inputs import InputFileError, read_text

SCHEMA_VERSION = 4
SUPPORTED_VERSIONS = (1, 2, 3, 4)
METRICS_LIMIT = 1 << 30  # about a million pairs; a larger file is not an eval output
STAGE_RENAMES = {1: {"superpoint": "extract", "superglue": "match"}, 2: {"features": "extract", "superglue": "match"}}
METHODS = ("superglue", "mnn", "mnn_ratio")
SYNTHETIC_EXTRAS = ("gain", "gain_vs_ratio_test", "precision_at_equal_recall")


class SchemaError(ValueError):
    """A file that is not a (readable) eval output; one line for the user."""


def number(value: Any, name: str = "a value") -> float:
    """A JSON number, null (a non-finite value written by eval) as NaN; a string or anything else is an
    error, not a number read from text."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r:.40}")
    return float(value)


def optional_number(value: Any, name: str) -> float | None:
    return None if value is None else number(value, name)


def count(value: Any, name: str) -> int:
    """A JSON count: a whole number, zero or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a count (a whole number, 0 or more), got {value!r:.40}")
    return value


def _bounds(value: Any, name: str) -> list[float]:
    """An interval [low, high] (null bounds, written for NaN, read as NaN)."""
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{name} must be an interval [low, high], got {value!r:.40}")
    return [number(bound, name) for bound in value]


@dataclass(frozen=True)
class Stats:
    """count / nonfinite / mean / median / p95 / min / max of a column (None where nothing was finite)."""

    count: int = 0
    nonfinite: int = 0
    mean: float | None = None
    median: float | None = None
    p95: float | None = None
    min: float | None = None
    max: float | None = None

    @staticmethod
    def from_json(data: dict[str, Any]) -> "Stats":
        return Stats(**{key: count(data.get(key, 0), key) if key in ("count", "nonfinite")
                        else optional_number(data.get(key), key) for key in Stats.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HomographyScores:
    """One matcher on the synthetic homography benchmark."""

    precision: float
    recall: float
    precision_pooled: float
    recall_pooled: float
    matches: Stats
    corner_error_px: Stats
    auc: dict[str, float]

    @staticmethod
    def from_json(data: dict[str, Any]) -> "HomographyScores":
        return HomographyScores(number(data.get("precision")), number(data.get("recall")),
                                number(data.get("precision_pooled")), number(data.get("recall_pooled")),
                                Stats.from_json(data.get("matches", {})),
                                Stats.from_json(data.get("corner_error_px", {})),
                                {key: number(value) for key, value in data.get("auc", {}).items()})

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "precision_pooled": self.precision_pooled,
                "recall_pooled": self.recall_pooled, "matches": self.matches.to_json(),
                "corner_error_px": self.corner_error_px.to_json(), "auc": dict(self.auc)}


@dataclass(frozen=True)
class SyntheticSummary:
    """Every matcher's homography scores, SuperGlue's gains with their intervals, and its precision
    at each baseline's recall (plain dicts: their keys are the thresholds)."""

    methods: dict[str, HomographyScores]
    extras: dict[str, dict[str, Any]]

    @staticmethod
    def from_json(data: dict[str, Any]) -> "SyntheticSummary":
        return SyntheticSummary({name: HomographyScores.from_json(data[name]) for name in METHODS if name in data},
                                {key: data.get(key, {}) for key in SYNTHETIC_EXTRAS})

    def to_json(self) -> dict[str, Any]:
        return {**{name: scores.to_json() for name, scores in self.methods.items()}, **self.extras}


@dataclass(frozen=True)
class PoseScores:
    """One matcher against ground-truth poses: AUC of the pose error ("5deg", ...), mean epipolar
    precision and matching score (fractions; None in files from before they were scored), the
    scored pairs without a pose by reason (``geometry.pose.FAILURE_REASONS``; each counts as infinite),
    and the 95% intervals [low, high] of the AUCs and the precision (empty and None before version 4)."""

    scored_pairs: int
    auc: dict[str, float]
    precision: float | None
    matching_score: float | None
    rotation_error_deg: Stats
    translation_error_deg: Stats
    failures: dict[str, int] = field(default_factory=dict)
    auc_ci95: dict[str, list[float]] = field(default_factory=dict)
    precision_ci95: list[float] | None = None

    @staticmethod
    def from_json(data: dict[str, Any]) -> "PoseScores":
        optional = {key: optional_number(data.get(key), key) for key in ("precision", "matching_score")}
        return PoseScores(count(data.get("scored_pairs", 0), "scored_pairs"),
                          {k: number(v, f"auc.{k}") for k, v in data.get("auc", {}).items()},
                          optional["precision"], optional["matching_score"],
                          Stats.from_json(data.get("rotation_error_deg", {})),
                          Stats.from_json(data.get("translation_error_deg", {})),
                          {str(k): int(v) for k, v in data.get("failures", {}).items()},
                          {k: _bounds(v, f"auc_ci95.{k}") for k, v in data.get("auc_ci95", {}).items()},
                          None if data.get("precision_ci95") is None
                          else _bounds(data["precision_ci95"], "precision_ci95"))

    def to_json(self) -> dict[str, Any]:
        return {"scored_pairs": self.scored_pairs, "auc": dict(self.auc), "precision": self.precision,
                "matching_score": self.matching_score, "rotation_error_deg": self.rotation_error_deg.to_json(),
                "translation_error_deg": self.translation_error_deg.to_json(), "failures": dict(self.failures),
                "auc_ci95": {key: list(bounds) for key, bounds in self.auc_ci95.items()},
                "precision_ci95": None if self.precision_ci95 is None else list(self.precision_ci95)}


@dataclass(frozen=True)
class PoseSummary:
    """SuperGlue's pose scores at the top level of ``summary.pose``, the baselines' under ``baselines``,
    SuperGlue's AUC gain over each baseline with its 95% interval under ``gains``, and how the intervals
    were drawn (level, method, what was resampled, resamples, seed) under ``intervals``."""

    superglue: PoseScores
    baselines: dict[str, PoseScores] = field(default_factory=dict)
    gains: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_json(data: dict[str, Any]) -> "PoseSummary":
        return PoseSummary(PoseScores.from_json(data),
                           {name: PoseScores.from_json(scores) for name, scores in data.get("baselines", {}).items()},
                           dict(data.get("gains", {})), dict(data.get("intervals", {})))

    def to_json(self) -> dict[str, Any]:
        return {**self.superglue.to_json(), "baselines": {name: s.to_json() for name, s in self.baselines.items()},
                "gains": dict(self.gains), "intervals": dict(self.intervals)}

    def method(self, name: str) -> PoseScores | None:
        return self.superglue if name == "superglue" else self.baselines.get(name)


@dataclass(frozen=True)
class SkippedFrames:
    """Frames (or pairs) that could not be decoded or paired, by reason, with a few example messages."""

    total: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @staticmethod
    def from_json(data: dict[str, Any] | None) -> "SkippedFrames":
        data = data or {}
        by_reason = {str(reason): count(value, f"skipped_frames.by_reason.{reason}")
                     for reason, value in dict(data.get("by_reason", {})).items()}
        return SkippedFrames(count(data.get("total", 0), "skipped_frames.total"), by_reason,
                             list(data.get("examples", [])))

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(self.by_reason), "examples": list(self.examples)}


@dataclass(frozen=True)
class Summary:
    """The run's aggregate numbers (see the README's metric definitions)."""

    pairs: int
    keypoints: Stats
    matches: Stats
    inliers: Stats
    inlier_ratio: Stats
    homography_valid_rate: float
    matching_score_histogram: dict[str, list[float]]
    timing_ms: dict[str, Stats]
    skipped_frames: SkippedFrames = field(default_factory=SkippedFrames)
    unpaired_frames: dict[str, int] | None = None
    synthetic: SyntheticSummary | None = None
    pose: PoseSummary | None = None

    @staticmethod
    def from_json(data: dict[str, Any], version: int) -> "Summary":
        renames = STAGE_RENAMES.get(version, {})
        timing = {renames.get(stage, stage): Stats.from_json(stats)
                  for stage, stats in data.get("timing_ms", {}).items()}
        stats = {key: Stats.from_json(data.get(key, {})) for key in ("keypoints", "matches", "inliers", "inlier_ratio")}
        return Summary(count(data["pairs"], "summary.pairs"), **stats,
                       homography_valid_rate=number(data.get("homography_valid_rate"), "homography_valid_rate"),
                       matching_score_histogram=data.get("matching_score_histogram", {"edges": [], "counts": []}),
                       timing_ms=timing, skipped_frames=SkippedFrames.from_json(data.get("skipped_frames")),
                       unpaired_frames=data.get("unpaired_frames"),
                       synthetic=SyntheticSummary.from_json(data["synthetic_homography"])
                       if "synthetic_homography" in data else None,
                       pose=PoseSummary.from_json(data["pose"]) if "pose" in data else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pairs": self.pairs, "keypoints": self.keypoints.to_json(), "matches": self.matches.to_json(),
            "inliers": self.inliers.to_json(), "inlier_ratio": self.inlier_ratio.to_json(),
            "homography_valid_rate": self.homography_valid_rate,
            "matching_score_histogram": self.matching_score_histogram,
            "timing_ms": {stage: stats.to_json() for stage, stats in self.timing_ms.items()},
            "skipped_frames": self.skipped_frames.to_json()}
        if self.unpaired_frames is not None:
            out["unpaired_frames"] = dict(self.unpaired_frames)
        if self.synthetic is not None:
            out["synthetic_homography"] = self.synthetic.to_json()
        if self.pose is not None:
            out["pose"] = self.pose.to_json()
        return out


@dataclass(frozen=True)
class Document:
    """A whole metrics.json: what ran on what, the summary and one record per pair."""

    partial: bool
    created: str
    input: dict[str, Any]
    model: dict[str, Any]
    wall_time_s: float
    summary: Summary
    pairs: list[dict[str, Any]]
    stop_reason: str = ""
    schema_version: int = SCHEMA_VERSION

    @staticmethod
    def from_json(data: Any, source: str = "metrics.json") -> "Document":
        if not isinstance(data, dict):
            raise SchemaError(f"{source}: not a superglue-ros eval output (not a JSON object)")
        version = data.get("schema_version")
        if version not in SUPPORTED_VERSIONS:
            raise SchemaError(f"{source}: schema_version {version!r} is not supported (known: {SUPPORTED_VERSIONS})")
        missing = [key for key in ("summary", "input", "model", "pairs") if not isinstance(data.get(key), (dict, list))]
        if missing or not isinstance(data["summary"], dict) or "pairs" not in data["summary"]:
            raise SchemaError(f"{source}: not a complete superglue-ros eval output (missing "
                              f"{', '.join(missing) or 'summary.pairs'})")
        inputs = dict(data["input"])
        if "bag" in inputs and "source" not in inputs:  # versions 1 and 2
            inputs["source"] = inputs.pop("bag")
        try:
            return Document(bool(data.get("partial", False)), str(data.get("created", "")), inputs,
                            dict(data["model"]), number(data.get("wall_time_s"), "wall_time_s"),
                            Summary.from_json(data["summary"], version), list(data["pairs"]),
                            str(data.get("stop_reason", "")), SCHEMA_VERSION)
        except (KeyError, TypeError, ValueError) as error:
            raise SchemaError(f"{source}: malformed eval output ({type(error).__name__}: {error})") from None

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "partial": self.partial, "stop_reason": self.stop_reason,
                "created": self.created, "input": self.input, "model": self.model, "wall_time_s": self.wall_time_s,
                "summary": self.summary.to_json(), "pairs": self.pairs}


def load(path: str | Path) -> Document:
    """metrics.json of a run folder (or the file itself); SchemaError when missing, broken or foreign."""
    target = Path(path)
    if target.is_dir():
        target = target / "metrics.json"
    if not target.exists():
        raise SchemaError(f"{path}: no metrics.json (not a finished `superglue-ros eval` output)")
    try:
        data = json.loads(read_text(target, METRICS_LIMIT, "metrics file"))
    except InputFileError as error:
        raise SchemaError(str(error)) from None
    except json.JSONDecodeError as error:
        raise SchemaError(f"{target}: not readable JSON ({error})") from None
    return Document.from_json(data, str(target))
