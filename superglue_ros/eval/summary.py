"""The summary of a run: aggregate statistics of its per-pair records, as typed schema objects.

Every number can be re-derived by hand from the records in metrics.json;
nothing is kept that the records do not hold, except the matching-score
histogram, binned as pairs go by so that memory stays flat on long runs.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from ..inference.pipeline import STAGES
from .. import metrics
from .schema import HomographyScores, PoseScores, PoseSummary, SkippedFrames, Stats, Summary, SyntheticSummary
from .scoring import BASELINES, METHODS

SCORE_BINS = 20
# How every pose interval is drawn, written beside them so that a reader of metrics.json knows.
POSE_INTERVALS = {"level": metrics.INTERVAL_LEVEL, "method": "percentile bootstrap", "resampled": "pairs",
                  "resamples": metrics.BOOTSTRAP_ROUNDS, "seed": metrics.BOOTSTRAP_SEED}


def stats(values: list[float]) -> Stats:
    return Stats(**metrics.summary(values))


def summarise(records: list[dict[str, Any]], score_counts: np.ndarray, skipped: SkippedFrames,
              unpaired: dict[str, int] | None = None) -> Summary:
    """Aggregate statistics of the per-pair records (see the README's metric definitions)."""
    def column(key: str) -> list[float]:
        return [float(r[key]) for r in records]

    timing = {stage: stats([1e3 * r["timings_s"][stage] for r in records]) for stage in STAGES}
    timing["total"] = stats([1e3 * sum(r["timings_s"][stage] for stage in STAGES) for r in records])
    return Summary(
        pairs=len(records), keypoints=stats(column("keypoints0") + column("keypoints1")),
        matches=stats(column("matches")), inliers=stats(column("inliers")),
        inlier_ratio=stats(column("inlier_ratio")),
        homography_valid_rate=float(np.mean(column("homography_valid"))) if records else math.nan,
        matching_score_histogram={"edges": metrics.histogram([], SCORE_BINS)["edges"],
                                  "counts": [int(c) for c in score_counts]},
        timing_ms=timing, skipped_frames=skipped, unpaired_frames=unpaired,
        synthetic=summarise_synthetic(records), pose=summarise_pose(records))


def summarise_synthetic(records: list[dict[str, Any]]) -> SyntheticSummary | None:
    synthetic = [r["synthetic"] for r in records if "synthetic" in r]
    if not synthetic:
        return None
    positives = [s["keypoints"]["ground_truth_matches"] for s in synthetic]
    methods = {name: _summarise_method([s[name] for s in synthetic], positives) for name in METHODS}
    images = [r["frame0"] for r in records if "synthetic" in r]
    return SyntheticSummary(methods, {
        "gain": _gain(methods["superglue"], methods["mnn"]) | _auc_interval(synthetic, "mnn", images),
        "gain_vs_ratio_test": _gain(methods["superglue"], methods["mnn_ratio"])
        | _auc_interval(synthetic, "mnn_ratio", images),
        "precision_at_equal_recall": _precision_at_equal_recall(synthetic, positives, methods)})


def summarise_pose(records: list[dict[str, Any]]) -> PoseSummary | None:
    """Pose AUCs, mean precision and matching score per matcher over the pairs that have a ground truth,
    the AUCs and precision with 95% intervals, and SuperGlue's AUC gain over each baseline with its
    interval, all resampling pairs."""
    if not any("pose" in r for r in records):
        return None
    poses = [r["pose"] for r in records if r.get("pose") is not None]
    scores = {name: _pose_scores([p[name] for p in poses]) for name in METHODS}
    gains = {}
    for name in BASELINES:
        errors = [p["superglue"]["error"] for p in poses], [p[name]["error"] for p in poses]
        intervals = metrics.auc_difference_interval(*errors, list(range(len(poses))), metrics.POSE_AUC_THRESHOLDS)
        gains[name] = {f"auc@{t:g}deg": _difference(scores["superglue"].auc[f"{t:g}deg"], scores[name].auc[f"{t:g}deg"])
                       for t in metrics.POSE_AUC_THRESHOLDS} | {
            f"auc@{t:g}deg_ci95": list(bounds) for t, bounds in intervals.items()}
    return PoseSummary(scores["superglue"], {name: scores[name] for name in BASELINES}, gains, POSE_INTERVALS)


def _pose_scores(pairs: list[dict[str, Any]]) -> PoseScores:
    """One matcher's pose scores, its AUCs and precision with 95% intervals resampling pairs."""
    errors = [p["error"] for p in pairs]
    precisions = [p["precision"] for p in pairs]
    each_pair = list(range(len(pairs)))
    auc = {f"{t:g}deg": v for t, v in metrics.error_auc(errors, metrics.POSE_AUC_THRESHOLDS).items()}
    auc_ci95 = {f"{t:g}deg": list(bounds)
                for t, bounds in metrics.auc_interval(errors, each_pair, metrics.POSE_AUC_THRESHOLDS).items()}
    mean = (lambda key: float(np.mean([p[key] for p in pairs])) if pairs else math.nan)  # noqa: E731
    failures = Counter(p["failure"] for p in pairs if p.get("failure"))
    return PoseScores(len(pairs), auc, mean("precision"), mean("matching_score"),
                      stats([p["rotation_error"] for p in pairs]), stats([p["translation_error"] for p in pairs]),
                      dict(sorted(failures.items())), auc_ci95, list(metrics.mean_interval(precisions, each_pair)))


def _summarise_method(scores: list[dict[str, Any]], positives: list[int]) -> HomographyScores:
    errors = [s["corner_error"] for s in scores]
    correct = sum(s["correct"] for s in scores)
    # Pooled over pairs: a pair with few keypoints weighs by its matches, and a pair without true
    # matches counts for whoever predicts there (its ratio is NaN and drops out of the per-pair
    # means only for the methods that abstain).
    return HomographyScores(
        precision=_nanmean([s["precision"] for s in scores]), recall=_nanmean([s["recall"] for s in scores]),
        precision_pooled=metrics.ratio_or_nan(correct, sum(s["scored"] for s in scores)),
        recall_pooled=metrics.ratio_or_nan(correct, sum(positives)),
        matches=stats([s["matches"] for s in scores]), corner_error_px=stats(errors),
        auc={f"{t:g}px": v for t, v in metrics.error_auc(errors, metrics.HOMOGRAPHY_AUC_THRESHOLDS).items()})


def _precision_at_equal_recall(scores: list[dict[str, Any]], positives: list[int],
                               methods: dict[str, HomographyScores]) -> dict[str, dict[str, float]]:
    """SuperGlue at the threshold most precise while recalling at least as much as each baseline.

    The model's own threshold serves its other uses (the homography above
    all); this is the point of its precision-recall curve that answers "more
    precise at equal or higher recall?".
    """
    curves = [s["superglue"]["by_confidence"] for s in scores]
    correct = np.sum([c["correct"] for c in curves], axis=0)
    scored = np.sum([c["scored"] for c in curves], axis=0)
    out = {}
    for name in BASELINES:
        point = metrics.precision_at_recall(correct, scored, sum(positives), methods[name].recall_pooled)
        out[name] = point | {"gain": _difference(point["precision_pooled"], methods[name].precision_pooled)}
    return out


def _gain(method: HomographyScores, baseline: HomographyScores) -> dict[str, float]:
    """Method minus baseline in precision, recall and each homography AUC."""
    return {key: _difference(getattr(method, key), getattr(baseline, key))
            for key in ("precision", "recall", "precision_pooled", "recall_pooled")} | {
        f"auc@{t:g}px": _difference(method.auc[f"{t:g}px"], baseline.auc[f"{t:g}px"])
        for t in metrics.HOMOGRAPHY_AUC_THRESHOLDS}


def _auc_interval(scores: list[dict[str, Any]], baseline: str, images: list[int]) -> dict[str, list[float]]:
    """95% interval of SuperGlue's AUC gain over ``baseline``, resampling source images."""
    intervals = metrics.auc_difference_interval([s["superglue"]["corner_error"] for s in scores],
                                                [s[baseline]["corner_error"] for s in scores], images,
                                                metrics.HOMOGRAPHY_AUC_THRESHOLDS)
    return {f"auc@{t:g}px_ci95": list(bounds) for t, bounds in intervals.items()}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _difference(a: float, b: float) -> float:
    return a - b if not (math.isnan(a) or math.isnan(b)) else math.nan
