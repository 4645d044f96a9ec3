"""`superglue-ros eval-compare RUN_A RUN_B`: the main metrics of two eval runs side by side.

``--fail-on-regression`` turns flagged regressions of B against A into exit
code 1, so that CI can gate on a model or setting change.
"""
from __future__ import annotations

import argparse
import math

from . import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-compare", help="compare two `eval` output folders side by side",
        description="Print the main metrics of two eval runs (A = baseline, B = candidate) and flag "
                    "regressions of B beyond each metric's tolerance.")
    parser.add_argument("run_a", help="baseline eval output folder (or its metrics.json)")
    parser.add_argument("run_b", help="candidate eval output folder (or its metrics.json)")
    parser.add_argument("--fail-on-regression", action="store_true", help="exit code 1 when anything regressed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..eval.compare import compare, differing_inputs, format_table, paired_auc_intervals
    from ..eval.schema import SchemaError, load

    try:
        doc_a, doc_b = load(args.run_a), load(args.run_b)
    except SchemaError as error:
        raise CommandError(str(error)) from None
    rows, regressions = compare(doc_a, doc_b)
    for name, doc in (("A", doc_a), ("B", doc_b)):
        print(f"{name}: {doc.model.get('name')} ({doc.model.get('weights')}), {doc.summary.pairs} pairs"
              + (" [PARTIAL]" if doc.partial else ""))
    differing = differing_inputs(doc_a, doc_b)
    if differing:
        print(f"note: the runs differ in {', '.join(differing)}; differences may reflect the data, not the model")
    print(format_table(rows, ["metric", "A", "B", "B - A", ""]))
    for kind, intervals in [] if differing else paired_auc_intervals(doc_a, doc_b):
        if not any(math.isnan(low) for low, _ in intervals.values()):  # NaN: one image or pair
            bounds = (f"{t:g}{kind.unit} [{low:+.3f}, {high:+.3f}]" for t, (low, high) in intervals.items())
            print(f"{kind.label}: {', '.join(bounds)}")
    print(f"{regressions} regression(s)" if regressions else "no regressions")
    return 1 if regressions and args.fail_on_regression else 0
