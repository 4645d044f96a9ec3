"""Two eval runs side by side: the main metrics, what changed, and which changes are regressions.

Run B is the candidate: a metric that got worse than run A by more than its
tolerance is flagged, so CI can gate on it. For two synthetic runs over the
same pairs (two models, say), SuperGlue's AUC change gets a 95% interval
that resamples whole source images; for two pose runs over the same pairs,
its pose AUC change one that resamples pairs.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from .schema import Document, Summary

INPUT_KEYS = ("source", "topic", "topic1", "mode", "synthetic", "strength", "warps", "photometric", "seed", "stride",
              "max_pairs", "images", "resize")
Reader = Callable[[Summary], "float | None"]


def _synthetic(method: str, metric: str) -> Reader:
    def read(summary: Summary) -> float | None:
        scores = summary.synthetic.methods.get(method) if summary.synthetic else None
        if scores is None:
            return None
        return scores.auc.get(metric[4:]) if metric.startswith("auc@") else getattr(scores, metric)
    return read


def _pose(method: str, metric: str) -> Reader:
    def read(summary: Summary) -> float | None:
        scores = summary.pose.method(method) if summary.pose else None
        if scores is None:
            return None
        return scores.auc.get(metric[4:]) if metric.startswith("auc@") else getattr(scores, metric)
    return read


def _timing(stage: str, statistic: str) -> Reader:
    return lambda summary: getattr(summary.timing_ms[stage], statistic) if stage in summary.timing_ms else None


# (label, reader, higher is better, relative tolerance before flagging)
METRICS: tuple[tuple[str, Reader, bool, float], ...] = (
    ("pairs", lambda s: s.pairs, True, math.inf),
    ("matches median", lambda s: s.matches.median, True, 0.05),
    ("inliers median", lambda s: s.inliers.median, True, 0.05),
    ("inlier ratio median", lambda s: s.inlier_ratio.median, True, 0.02),
    ("valid homography rate", lambda s: s.homography_valid_rate, True, 0.02),
    ("skipped frames", lambda s: s.skipped_frames.total, False, 0.0),
    ("SG precision", _synthetic("superglue", "precision"), True, 0.02),
    ("SG recall", _synthetic("superglue", "recall"), True, 0.02),
    *((f"SG AUC@{t}px", _synthetic("superglue", f"auc@{t}px"), True, 0.05) for t in (1, 3, 5, 10)),
    ("MNN precision", _synthetic("mnn", "precision"), True, math.inf),
    ("MNN AUC@3px", _synthetic("mnn", "auc@3px"), True, math.inf),
    ("MNN+ratio precision", _synthetic("mnn_ratio", "precision"), True, math.inf),
    ("MNN+ratio AUC@3px", _synthetic("mnn_ratio", "auc@3px"), True, math.inf),
    *((f"pose AUC@{t}deg", _pose("superglue", f"auc@{t}deg"), True, 0.05) for t in (5, 10, 20)),
    ("pose precision", _pose("superglue", "precision"), True, 0.02),
    ("pose matching score", _pose("superglue", "matching_score"), True, 0.05),
    ("MNN+ratio pose AUC@10deg", _pose("mnn_ratio", "auc@10deg"), True, math.inf),
    ("extract ms median", _timing("extract", "median"), False, 0.10),
    ("match ms median", _timing("match", "median"), False, 0.10),
    ("total ms median", _timing("total", "median"), False, 0.10),
    ("total ms p95", _timing("total", "p95"), False, 0.15),
)


def lookup(summary: Summary, reader: Reader) -> float | None:
    value = reader(summary)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        not math.isnan(value) else None


def regressed(a: float, b: float, higher_is_better: bool, tolerance: float) -> bool:
    """Whether B is worse than A by more than ``tolerance`` relative to A (absolute when A is 0)."""
    worse_by = (a - b) if higher_is_better else (b - a)
    return worse_by > tolerance * max(abs(a), 1e-9) if math.isfinite(tolerance) else False


def compare(doc_a: Document, doc_b: Document) -> tuple[list[list[str]], int]:
    """Table rows (metric, A, B, change, flag) for metrics present in either run, and the regression count."""
    rows, regressions = [], 0
    for label, reader, higher, tolerance in METRICS:
        a, b = lookup(doc_a.summary, reader), lookup(doc_b.summary, reader)
        if a is None and b is None:
            continue
        flag = ""
        change = ""
        if a is not None and b is not None:
            change = f"{b - a:+.3g}" + (f" ({(b - a) / abs(a):+.1%})" if a else "")
            if regressed(a, b, higher, tolerance):
                flag = "REGRESSION"
                regressions += 1
            elif regressed(b, a, higher, tolerance):
                flag = "better"
        rows.append([label, _cell(a), _cell(b), change, flag])
    return rows, regressions


def differing_inputs(doc_a: Document, doc_b: Document) -> list[str]:
    return [key for key in INPUT_KEYS if doc_a.input.get(key) != doc_b.input.get(key)]


@dataclass(frozen=True)
class PairedAuc:
    """One kind of per-pair error that two runs over the same pairs can be compared on."""

    label: str  # what the CLI prints before the intervals
    key: str  # the pair record's entry
    error: str  # SuperGlue's error in it
    thresholds: tuple[float, ...]
    unit: str
    by_source_image: bool  # resample whole source images (synthetic warps of one image) or pairs alone

    def errors(self, doc: Document) -> tuple[list[tuple[Any, ...]], list[float | None]]:
        """The scored pairs' identities and SuperGlue's errors (a failure's infinite error is null in JSON;
        error_auc counts it, as NaN, as a failure)."""
        records = [r for r in doc.pairs if r.get(self.key)]
        # older files' pose records held SuperGlue's scores alone, without the method key
        scores = [r[self.key].get("superglue", r[self.key]) for r in records]
        return ([(r["frame0"], r["frame1"], r.get("name0"), r.get("name1")) for r in records],
                [entry[self.error] for entry in scores])


PAIRED = (PairedAuc("SG AUC B - A on the same pairs, 95% intervals over images", "synthetic", "corner_error",
                    metrics.HOMOGRAPHY_AUC_THRESHOLDS, "px", True),
          PairedAuc("SG pose AUC B - A on the same pairs, 95% intervals over pairs", "pose", "error",
                    metrics.POSE_AUC_THRESHOLDS, "deg", False))


def paired_auc_intervals(doc_a: Document, doc_b: Document) -> list[tuple[PairedAuc, dict[float, tuple[float, float]]]]:
    """95% intervals of SuperGlue's AUC change B - A, for each kind of error both runs scored on the same pairs.

    Pairing the runs pair by pair and resampling (see
    ``metrics.auc_difference_interval``) tells a real change from the luck
    of a few images or pairs; a kind is left out when the runs' scored pairs
    differ.
    """
    found = []
    for kind in PAIRED:
        (pairs_a, errors_a), (pairs_b, errors_b) = kind.errors(doc_a), kind.errors(doc_b)
        if pairs_a and pairs_a == pairs_b:
            groups = [pair[0] for pair in pairs_a] if kind.by_source_image else list(range(len(pairs_a)))
            found.append((kind, metrics.auc_difference_interval(errors_b, errors_a, groups, kind.thresholds)))
    return found


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value):
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


def format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
