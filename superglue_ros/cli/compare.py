"""`superglue-ros eval-compare RUN_A RUN_B`: the main metrics of two eval runs side by side.

Run B is the candidate: a metric that got worse than run A by more than its
tolerance is flagged, and ``--fail-on-regression`` turns flags into exit
code 1 so CI can gate on it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..eval import metrics
from . import CommandError

SUPPORTED_SCHEMAS = (1, 2)
INPUT_KEYS = ("bag", "topic", "topic1", "mode", "synthetic", "strength", "warps", "photometric", "seed", "stride",
              "max_pairs")
# (label, path in summary, higher is better, relative tolerance before flagging)
METRICS: tuple[tuple[str, tuple[str, ...], bool, float], ...] = (
    ("pairs", ("pairs",), True, math.inf),
    ("matches median", ("matches", "median"), True, 0.05),
    ("inliers median", ("inliers", "median"), True, 0.05),
    ("inlier ratio median", ("inlier_ratio", "median"), True, 0.02),
    ("valid homography rate", ("homography_valid_rate",), True, 0.02),
    ("SG precision", ("synthetic_homography", "superglue", "precision"), True, 0.02),
    ("SG recall", ("synthetic_homography", "superglue", "recall"), True, 0.02),
    ("SG AUC@1px", ("synthetic_homography", "superglue", "auc", "1px"), True, 0.05),
    ("SG AUC@3px", ("synthetic_homography", "superglue", "auc", "3px"), True, 0.05),
    ("SG AUC@5px", ("synthetic_homography", "superglue", "auc", "5px"), True, 0.05),
    ("SG AUC@10px", ("synthetic_homography", "superglue", "auc", "10px"), True, 0.05),
    ("MNN precision", ("synthetic_homography", "mnn", "precision"), True, math.inf),
    ("MNN AUC@3px", ("synthetic_homography", "mnn", "auc", "3px"), True, math.inf),
    ("MNN+ratio precision", ("synthetic_homography", "mnn_ratio", "precision"), True, math.inf),
    ("MNN+ratio AUC@3px", ("synthetic_homography", "mnn_ratio", "auc", "3px"), True, math.inf),
    ("pose AUC@5deg", ("pose", "auc", "5deg"), True, 0.05),
    ("pose AUC@10deg", ("pose", "auc", "10deg"), True, 0.05),
    ("pose AUC@20deg", ("pose", "auc", "20deg"), True, 0.05),
    ("features ms median", ("timing_ms", "features", "median"), False, 0.10),
    ("SuperGlue ms median", ("timing_ms", "superglue", "median"), False, 0.10),
    ("total ms median", ("timing_ms", "total", "median"), False, 0.10),
    ("total ms p95", ("timing_ms", "total", "p95"), False, 0.15),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-compare", help="compare two `eval` output folders side by side",
        description="Print the main metrics of two eval runs (A = baseline, B = candidate) and flag "
                    "regressions of B beyond each metric's tolerance.")
    parser.add_argument("run_a", help="baseline eval output folder (or its metrics.json)")
    parser.add_argument("run_b", help="candidate eval output folder (or its metrics.json)")
    parser.add_argument("--fail-on-regression", action="store_true", help="exit code 1 when anything regressed")
    parser.set_defaults(func=run)


def load_metrics(path: str) -> dict[str, Any]:
    """metrics.json of a run folder; a missing, broken or unknown-version file is a one-line error."""
    target = Path(path)
    if target.is_dir():
        target = target / "metrics.json"
    if not target.is_file():
        raise CommandError(f"{path}: no metrics.json (not a finished `superglue-ros eval` output)")
    try:
        document = json.loads(target.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CommandError(f"{target}: not readable JSON ({error})") from None
    version = document.get("schema_version") if isinstance(document, dict) else None
    if version not in SUPPORTED_SCHEMAS:
        raise CommandError(f"{target}: schema_version {version!r} is not supported (known: {SUPPORTED_SCHEMAS})")
    return upgraded(document)


def upgraded(document: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 run in schema-2 names, so that runs from before the rename still compare."""
    timing = document.get("summary", {}).get("timing_ms", {})
    if document["schema_version"] == 1 and "superpoint" in timing:
        timing["features"] = timing.pop("superpoint")
    return document


def lookup(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = summary
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def regressed(a: float, b: float, higher_is_better: bool, tolerance: float) -> bool:
    """Whether B is worse than A by more than ``tolerance`` relative to A (absolute when A is 0)."""
    worse_by = (a - b) if higher_is_better else (b - a)
    return worse_by > tolerance * max(abs(a), 1e-9) if math.isfinite(tolerance) else False


def compare(doc_a: dict[str, Any], doc_b: dict[str, Any]) -> tuple[list[list[str]], int]:
    """Table rows (metric, A, B, change, flag) for metrics present in either run, and the regression count."""
    rows, regressions = [], 0
    for label, path, higher, tolerance in METRICS:
        a, b = lookup(doc_a["summary"], path), lookup(doc_b["summary"], path)
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


def paired_auc_intervals(doc_a: dict[str, Any], doc_b: dict[str, Any]) -> dict[float, tuple[float, float]] | None:
    """95% intervals of SuperGlue's synthetic AUC change B - A, for runs with the same inputs.

    Pairing the runs pair by pair and resampling whole source images (see
    ``metrics.auc_difference_interval``) tells a real change from the luck
    of a few images; None when the runs' synthetic pairs differ.
    """
    def errors(doc: dict[str, Any]) -> tuple[list[tuple[int, int]], list[float | None]]:
        records = [r for r in doc["pairs"] if "synthetic" in r]
        # A failed estimate's infinite error is null in JSON; error_auc counts it (as NaN) as a failure.
        return ([(r["frame0"], r["frame1"]) for r in records],
                [r["synthetic"]["superglue"]["corner_error"] for r in records])

    (frames_a, errors_a), (frames_b, errors_b) = errors(doc_a), errors(doc_b)
    if not frames_a or frames_a != frames_b:
        return None
    return metrics.auc_difference_interval(errors_b, errors_a, [f[0] for f in frames_a],
                                           metrics.HOMOGRAPHY_AUC_THRESHOLDS)


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


def run(args: argparse.Namespace) -> int:
    doc_a, doc_b = load_metrics(args.run_a), load_metrics(args.run_b)
    rows, regressions = compare(doc_a, doc_b)
    notes = [f"{name}: {doc['model']['name']} ({doc['model']['weights']}), {doc['summary']['pairs']} pairs"
             + (" [PARTIAL]" if doc["partial"] else "") for name, doc in (("A", doc_a), ("B", doc_b))]
    print("\n".join(notes))
    differing = [key for key in INPUT_KEYS if doc_a["input"].get(key) != doc_b["input"].get(key)]
    if differing:
        print(f"note: the runs differ in {', '.join(differing)}; differences may reflect the data, not the model")
    print(format_table(rows, ["metric", "A", "B", "B - A", ""]))
    intervals = None if differing else paired_auc_intervals(doc_a, doc_b)
    if intervals is not None and not any(math.isnan(low) for low, _ in intervals.values()):  # NaN: one image
        print("SG AUC B - A on the same pairs, 95% intervals over images: "
              + ", ".join(f"{t:g}px [{low:+.3f}, {high:+.3f}]" for t, (low, high) in intervals.items()))
    print(f"{regressions} regression(s)" if regressions else "no regressions")
    return 1 if regressions and args.fail_on_regression else 0
