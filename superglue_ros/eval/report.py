"""The human side of an evaluation: one self-contained report.html (plots embedded as base64 PNGs).

A single file with no external assets can be attached to an issue, mailed
or opened offline on a robot's laptop and still shows everything.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..files.outputs import write_bytes
from .schema import METHODS, Document, PoseSummary, Stats, SyntheticSummary

REPORT_MARKER = "<title>superglue-ros eval</title>"  # how a later run recognises a report it may replace
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}.partial{background:#fdd;border:2px solid #c00;padding:.5em 1em;font-weight:bold}
img{max-width:100%}"""


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _figure(width: float = 7.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def cdf_plot(curves: dict[str, list[float]], xlabel: str, limit: float) -> str:
    """Cumulative fraction of pairs with error <= x; failures (inf) never reach 1."""
    figure, axes = _figure()
    for label, errors in curves.items():
        values = np.asarray(errors, dtype=np.float64)
        values = np.where(np.isnan(values), np.inf, values)
        x = np.concatenate([[0.0], np.sort(values[np.isfinite(values)]), [limit]])
        y = np.concatenate([[0.0], np.arange(1, x.size - 1) / max(values.size, 1),
                            [np.isfinite(values).sum() / max(values.size, 1)]])
        axes.step(x, y, where="post", label=label)
    axes.set_xlim(0, limit)
    axes.set_ylim(0, 1)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("fraction of pairs")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def counts_plot(records: list[dict[str, Any]]) -> str:
    figure, axes = _figure()
    x = [r["time_s"] for r in records]
    for key in ("keypoints1", "matches", "inliers"):
        axes.plot(x, [r[key] for r in records], marker=".", label=key)
    axes.set_xlabel("time of the current frame since the first pair [s]")
    axes.set_ylabel("count")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def timing_plot(timing_ms: dict[str, Stats]) -> str:
    figure, axes = _figure()
    stages = [s for s in timing_ms if s != "total"]
    medians = [timing_ms[s].median or 0.0 for s in stages]
    p95 = [timing_ms[s].p95 or 0.0 for s in stages]
    positions = np.arange(len(stages))
    axes.bar(positions - 0.2, medians, 0.4, label="median")
    axes.bar(positions + 0.2, p95, 0.4, label="p95")
    axes.set_xticks(positions, stages)
    axes.set_ylabel("ms per pair")
    axes.grid(alpha=0.3, axis="y")
    axes.legend()
    return _png(figure)


def histogram_plot(histogram: dict[str, list[float]]) -> str:
    figure, axes = _figure()
    edges = np.asarray(histogram["edges"])
    axes.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", edgecolor="white")
    axes.set_xlabel("SuperGlue matching score")
    axes.set_ylabel("matches")
    return _png(figure)


def sample_picture(sample: Any) -> str:
    import cv2

    from ..viz import draw_matches

    canvas = draw_matches(sample.image0, sample.image1, sample.points0, sample.points1, sample.confidences,
                          sample.label)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError("cannot encode a match picture as PNG")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_number(v)}</td>" if i else f"<th>{html.escape(str(v))}</th>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _stat_rows(rows: dict[str, Stats]) -> list[list[Any]]:
    return [[key, stats.median, stats.p95, stats.mean] for key, stats in rows.items()]


def render(outcome: Any) -> str:
    """The report's HTML text from an evaluation outcome (the document plus match pictures)."""
    document: Document = outcome.document
    summary = document.summary
    records = document.pairs
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>{REPORT_MARKER}"
             f"<style>{STYLE}</style></head><body><h1>superglue-ros evaluation</h1>"]
    if document.partial:
        reason = html.escape(document.stop_reason) if document.stop_reason else "interrupted"
        parts.append(f"<p class='partial'>PARTIAL ({reason}): {summary.pairs} of "
                     f"{document.input['expected_pairs']} pairs.</p>")
    parts.append(_source_paragraph(document))
    parts.append("<h2>Matches</h2>" + _table(["", "median", "p95", "mean"], _stat_rows(
        {"keypoints": summary.keypoints, "matches": summary.matches, "inliers": summary.inliers,
         "inlier_ratio": summary.inlier_ratio})))
    parts.append(f"<p>Valid homography in {_number(summary.homography_valid_rate)} of pairs.</p>")
    if summary.unpaired_frames:
        parts.append("<p>Frames without a stereo partner: " + ", ".join(
            f"<code>{html.escape(topic)}</code> {count}" for topic, count in summary.unpaired_frames.items()) + ".</p>")
    if summary.skipped_frames.total:
        skipped = summary.skipped_frames
        parts.append(f"<p>Skipped (not decodable or not pairable): {skipped.total}, " + ", ".join(
            f"{html.escape(reason)} {count}" for reason, count in skipped.by_reason.items()) + ". For example: "
            + "; ".join(f"<code>{html.escape(example)}</code>" for example in skipped.examples[:3]) + ".</p>")
    parts.append(_img(counts_plot(records), "matches over time"))
    parts.append(_img(histogram_plot(summary.matching_score_histogram), "matching score histogram"))
    if summary.synthetic is not None:
        parts.append(_synthetic_section(summary.synthetic, records))
    if summary.pose is not None:
        parts.append(_pose_section(summary.pose, records))
    timing = summary.timing_ms
    parts.append("<h2>Timing [ms per pair]</h2>" + _table(["stage", "median", "p95", "mean"], _stat_rows(timing)))
    parts.append(_img(timing_plot(timing), "timing per stage"))
    if outcome.samples:
        parts.append("<h2>Example matches</h2>")
        parts.extend(f"<p>{_img(sample_picture(s), s.label)}</p>" for s in outcome.samples)
    parts.append("</body></html>")
    return "\n".join(parts)


def _source_paragraph(document: Document) -> str:
    source, model = document.input, document.model
    topics = " and ".join(f"<code>{html.escape(t)}</code>" for t in (source.get("topic"), source.get("topic1")) if t)
    mode = "synthetic homography" if source.get("synthetic") else "pair list" if source.get("images") else \
        source.get("mode", "")
    return (f"<p>Source <code>{html.escape(str(source['source']))}</code>{', ' + topics if topics else ''}, mode "
            f"{html.escape(mode)}, stride {source.get('stride', 1)}; model {html.escape(model['name'])} "
            f"(<code>{html.escape(model['weights'])}</code>), {document.summary.pairs} pairs, "
            f"created {html.escape(document.created)}.</p>")


def _synthetic_section(synthetic: SyntheticSummary, records: list[dict[str, Any]]) -> str:
    thresholds = [f"{t:g}px" for t in metrics.HOMOGRAPHY_AUC_THRESHOLDS]
    rows = [[name, scores.precision, scores.recall, scores.precision_pooled, scores.recall_pooled,
             scores.matches.median] + [scores.auc.get(t, math.nan) for t in thresholds]
            for name, scores in synthetic.methods.items()]
    table = _table(["method", "precision", "recall", "pooled precision", "pooled recall", "median matches"]
                   + [f"AUC@{t}" for t in thresholds], rows)
    curves = {name: [r["synthetic"][name]["corner_error"] for r in records if "synthetic" in r]
              for name in synthetic.methods}
    return ("<h2>Synthetic homography benchmark</h2><p>Precision/recall of matches at 3 px; AUC of the mean "
            "corner error. All methods use the same keypoints; mnn_ratio adds Lowe's ratio test (0.8) "
            "to mutual nearest neighbours.</p>" + table + _gain_table(synthetic, thresholds)
            + _equal_recall_table(synthetic)
            + _img(cdf_plot(curves, "mean corner error [px]", 10.0), "corner error CDF"))


def _gain_table(synthetic: SyntheticSummary, thresholds: list[str]) -> str:
    """SuperGlue's AUC gain over each baseline with its 95% interval over source images."""
    rows = []
    for key, baseline in (("gain", "mnn"), ("gain_vs_ratio_test", "mnn_ratio")):
        gain = synthetic.extras.get(key, {})
        if f"auc@{thresholds[0]}_ci95" in gain:
            rows.append([f"superglue - {baseline}"] + [
                _with_interval(gain[f"auc@{t}"], gain[f"auc@{t}_ci95"]) for t in thresholds])
    if not rows:
        return ""
    return ("<p>AUC gain [95% interval, resampling whole source images]: an interval containing 0 means the "
            "images do not decide.</p>" + _table(["gain"] + [f"AUC@{t}" for t in thresholds], rows))


def _with_interval(value: Any, bounds: list[Any] | None) -> str:
    """The value and its interval (none in files from before intervals were written)."""
    if bounds is None:
        return _number(value)
    return f"{_number(value)} [{_number(bounds[0])}, {_number(bounds[1])}]"


def _equal_recall_table(synthetic: SyntheticSummary) -> str:
    """SuperGlue's precision at each baseline's recall, from its precision-recall curve."""
    rows = [[f"superglue vs {name}"] + [_number(value, 4) for value in (  # gains are tenths of a point
                synthetic.methods[name].precision_pooled, synthetic.methods[name].recall_pooled, point["threshold"],
                point["precision_pooled"], point["recall_pooled"], point["gain"])]
            for name, point in synthetic.extras.get("precision_at_equal_recall", {}).items()]
    if not rows:
        return ""
    return ("<p>Precision at equal or higher recall (pooled): SuperGlue at the threshold most precise "
            "while recalling at least as much as the baseline.</p>"
            + _table(["", "baseline precision", "baseline recall", "superglue threshold", "superglue precision",
                      "superglue recall", "precision gain"], rows))


def _pose_section(pose: PoseSummary, records: list[dict[str, Any]]) -> str:
    thresholds = list(pose.superglue.auc)
    rows = [[name] + [_with_interval(scores.auc.get(t), scores.auc_ci95.get(t)) for t in thresholds]
            + [_with_interval(scores.precision, scores.precision_ci95), scores.matching_score,
               scores.scored_pairs, _failures(scores.failures)]
            for name in METHODS if (scores := pose.method(name)) is not None]
    header = ["precision", "matching score", "scored pairs", "no pose (infinite error)"]
    table = _table(["method"] + [f"AUC@{t}" for t in thresholds] + header, rows)
    gains = [[f"superglue - {name}"] + [_with_interval(gain.get(f"auc@{t}"), gain.get(f"auc@{t}_ci95", [None, None]))
                                        for t in thresholds] for name, gain in pose.gains.items()]
    gain_table = ("<p>AUC gain [95% interval]:</p>"
                  + _table(["gain"] + [f"AUC@{t}" for t in thresholds], gains)) if gains else ""
    drawn = pose.intervals
    how = (f" Intervals [in brackets]: {drawn['level']:.0%}, {html.escape(str(drawn['method']))} over "
           f"{drawn['resamples']} resamples of {html.escape(str(drawn['resampled']))} (seed {drawn['seed']})."
           if drawn else "")
    curves = {name: [errors[name]["error"] for r in records if (errors := _pose_record(r)) and name in errors]
              for name in METHODS}
    return ("<h2>Relative pose (essential matrix)</h2><p>Pose error = max(rotation, translation-direction error); "
            "AUC of the pose error; precision = matches with squared symmetric epipolar distance below 5e-4; "
            f"matching score = correct matches / keypoints of image 0.{how}</p>" + table + gain_table
            + _img(cdf_plot({k: v for k, v in curves.items() if v}, "pose error [deg]", 20.0), "pose error CDF"))


def _failures(failures: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in failures.items()) or "0"


def _pose_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """A pair's pose scores per method (older files held SuperGlue's alone, without a method key)."""
    pose = record.get("pose")
    if not pose:
        return None
    return pose if "superglue" in pose else {"superglue": pose}


def write_report(path: Path, outcome: Any) -> None:
    write_bytes(path, render(outcome).encode("utf-8"))
