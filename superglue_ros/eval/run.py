"""Replay a source through the matcher and measure it: the engine behind `superglue-ros eval`.

Each pair goes through the same pipeline as the live node and yields one
JSON-ready record; the summary, plots and the output bag are all derived
from those records. Outputs are staged in a hidden folder and renamed into
place at the end, so a crash never leaves files that look like a finished
run, while Ctrl-C or SIGTERM still produces a clearly marked partial report
of the pairs done (a second signal waits until it is written). A bag that
cannot be read past some message ends the run the same way, with the reason.
"""
from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.matcher import Matcher, PairRequest
from ..inference.pipeline import PairOutcome, match_pair
from ..files.inputs import InputFileError, read_bounded, regular_file
from ..files.outputs import (OutputError, StagedFolder, check_replaceable_item, refuse_inputs, signals_deferred,
                             write_json)
from ..stream.messages import homography_fields, matches_fields
from .. import metrics
from .bagio import Bag, BagError, OutputBag
from .config import EvalConfig, EvalError
from .ground_truth import BagGroundTruth, load_ground_truth
from .pairlist import PairListSource
from .schema import Document, SkippedFrames
from .scoring import score_pose, score_synthetic
from .sources import FrameTally, FramePair, expected_pairs, frame_pairs
from .summary import SCORE_BINS, summarise
from .report import REPORT_MARKER

OUTPUT_BAG = "matches_bag"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


@dataclass
class Sample:
    """A pair kept for the report's match pictures."""

    image0: np.ndarray
    image1: np.ndarray
    points0: np.ndarray
    points1: np.ndarray
    confidences: np.ndarray
    label: str


@dataclass
class Outcome:
    """What one run produced; ``interrupted`` is the Ctrl-C or SIGTERM that ended it early, if any."""

    document: Document | None = None
    samples: list[Sample] = field(default_factory=list)
    score_counts: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, dtype=np.int64))
    interrupted: KeyboardInterrupt | None = None
    unscored: dict[str, int] = field(default_factory=dict)  # ground truth that could not score a pair, by reason

    def unscored_text(self) -> str:
        """One warning line about ground truth that scored nothing ("" when all of it was usable)."""
        if not self.unscored:
            return ""
        return ("ground truth could not score every pair: "
                + ", ".join(f"{reason} {count}" for reason, count in self.unscored.items()))


class Run:
    """Accumulates per-pair records, the output bag and report samples while pairs stream by."""

    def __init__(self, config: EvalConfig, matcher: Matcher, staging: StagedFolder | None, expected: int,
                 truth: BagGroundTruth | None) -> None:
        self.config, self.matcher, self.truth = config, matcher, truth
        self.records: list[dict[str, Any]] = []
        self.outcome = Outcome()
        self.sample_at = sorted({0, expected // 2, max(expected - 1, 0)})[:config.visualisations]
        writes_bag = staging is not None and not (config.synthetic or config.pair_list)
        self.bag = OutputBag(staging / OUTPUT_BAG, config.storage) if writes_bag else None
        self.first_time: int | None = None
        self.tally = FrameTally(max_bad_frames=config.max_bad_frames)

    def add(self, pair: FramePair) -> dict[str, Any] | None:
        """Match, estimate and score one pair; returns its record (None when matching failed, counted)."""
        try:
            outcome = match_pair(self.matcher, self.request(pair), self.config.homography, pair.decode_s)
        except (ValueError, RuntimeError) as error:
            self.tally.skip("matching failed", f"pair of frames {pair.frame0.index}/{pair.frame1.index}: "
                                               f"{type(error).__name__}: {error}")
            return None
        record = self.record(pair, outcome)
        if self.bag is not None:
            try:
                self._write_messages(pair, outcome)
            except OutputError:  # disk full, quota, read-only: end the run, keep the pairs before it
                with suppress(OutputError):
                    self.bag.close()
                self.drop_bag()
                raise
        points0, points1, confidences = outcome.pair.matched_points()
        if record["index"] in self.sample_at:
            self.outcome.samples.append(Sample(pair.frame0.image, pair.frame1.image, points0, points1, confidences,
                                               f"pair {record['index']}: {len(confidences)} matches, "
                                               f"{outcome.homography.num_inliers} inliers"))
        self.outcome.score_counts += metrics.histogram(confidences, SCORE_BINS)["counts"]
        self.records.append(record)
        return record

    def request(self, pair: FramePair) -> PairRequest:
        """Real frames are cached by (topic, index), so each runs the extractor once."""
        if self.config.synthetic or self.config.pair_list:
            return PairRequest(pair.frame0.image, pair.frame1.image)
        return PairRequest(pair.frame0.image, pair.frame1.image, (pair.frame0.topic, pair.frame0.index),
                           (pair.frame1.topic, pair.frame1.index))

    def record(self, pair: FramePair, outcome: PairOutcome) -> dict[str, Any]:
        if self.first_time is None:
            self.first_time = pair.frame1.stamp.nanoseconds
        estimate, matched = outcome.homography, outcome.pair
        record: dict[str, Any] = {
            "index": len(self.records), "frame0": pair.frame0.index, "frame1": pair.frame1.index,
            "name0": pair.frame0.name or pair.frame0.topic, "name1": pair.frame1.name or pair.frame1.topic,
            "stamp0_ns": pair.frame0.stamp.nanoseconds, "stamp1_ns": pair.frame1.stamp.nanoseconds,
            "time_s": (pair.frame1.stamp.nanoseconds - self.first_time) / 1e9,
            "keypoints0": len(matched.features0), "keypoints1": len(matched.features1),
            "matches": matched.result.num_matches, "inliers": estimate.num_inliers,
            "inlier_ratio": estimate.inlier_ratio, "homography_valid": estimate.valid,
            "homography_reason": estimate.reason, "timings_s": outcome.timings,
        }
        if pair.h_true is not None:
            record["synthetic"] = score_synthetic(matched, pair.h_true, estimate)
        if pair.truth is not None:
            record["pose"] = score_pose(matched, pair.truth.k0, pair.truth.k1, pair.truth.t_0to1)
        elif self.truth is not None:
            t_0to1 = self.truth.relative(pair.frame0.stamp.nanoseconds, pair.frame1.stamp.nanoseconds)
            record["pose"] = None if t_0to1 is None else score_pose(matched, self.truth.k, self.truth.k, t_0to1)
        return record

    def _write_messages(self, pair: FramePair, outcome: PairOutcome) -> None:
        """The messages the live node would publish for this pair, stamped at the current frame's receipt."""
        current, reference = pair.frame1.stamp, pair.frame0.stamp
        fields = matches_fields(outcome.pair, current, reference, self.config.mode, self.matcher.model_name,
                                self.matcher.weights_id, outcome.total_seconds)
        self.bag.write(self.config.matches_topic, "superglue_ros/msg/Matches", fields, pair.frame1.log_time)
        self.bag.write(self.config.homography_topic, "superglue_ros/msg/Homography",
                       homography_fields(outcome.homography, current, reference), pair.frame1.log_time)

    def close_bag(self) -> str:
        """Finish the output bag; why it could not be written ("" when it was), in which case it is left out."""
        if self.bag is None:
            return ""
        try:
            self.bag.close()
        except OutputError as error:
            self.drop_bag()
            return str(error)
        return ""

    def drop_bag(self) -> None:
        """Leave the bag out of the outputs: what it holds is incomplete (metrics.json still has every pair)."""
        if self.bag is not None:
            path, self.bag = self.bag.path, None
            shutil.rmtree(path, ignore_errors=True)


def output_items(config: EvalConfig) -> dict[str, str]:
    items = {REPORT_FILE: "file", METRICS_FILE: "file"}
    if not (config.synthetic or config.pair_list):
        items[OUTPUT_BAG] = "folder"
    return items


def source_count(source: Bag | PairListSource, config: EvalConfig) -> int:
    return len(source.entries) if isinstance(source, PairListSource) else source.count(config.topic)


def evaluate(source: Bag | PairListSource, config: EvalConfig, matcher: Matcher, out_dir: Path,
             on_pair: Callable[[dict[str, Any]], None] | None = None, progress: bool = True) -> Outcome:
    """Run the evaluation and move metrics.json, report.html and the output bag into ``out_dir``.

    ``on_pair`` is called with each record (the progress bar, tests). Ctrl-C
    or SIGTERM finishes the outputs from the pairs done, marked partial, and
    is handed back in ``Outcome.interrupted``; before the first pair it is
    raised, with nothing written.
    """
    from tqdm import tqdm

    from .report import write_report  # matplotlib: imported when a run starts

    config.check()
    if not isinstance(source, PairListSource):
        for topic in filter(None, (config.topic, config.topic1)):
            source.check_image_topic(topic)
    expected = expected_pairs(source_count(source, config), config)
    if expected == 0:
        raise EvalError(f"no pairs to evaluate: {config.topic} has {source_count(source, config)} frame(s); "
                        f"sequential mode needs at least two selected frames (--stride {config.stride})")
    inputs = [config.source] + ([config.images] if config.images else [])
    refuse_inputs([out_dir / name for name in output_items(config)], inputs, folder=out_dir)
    replaced = check_replaceable(out_dir)
    truth = load_ground_truth(source, config) if config.gt_topic and isinstance(source, Bag) else None
    staging = StagedFolder(out_dir, output_items(config))
    matcher.clear_cache()  # keys are (topic, frame index): frames of another bag must not be reused
    try:
        run = Run(config, matcher, staging, expected, truth)
        started, stop_reason = time.perf_counter(), ""
        try:
            with tqdm(total=expected, unit="pair", desc="eval", disable=not progress, dynamic_ncols=True) as bar:
                for pair in frame_pairs(source, config, run.tally, matcher.max_image_pixels, matcher.resize):
                    record = run.add(pair)
                    bar.update(1)
                    if record is not None:
                        bar.set_postfix(matches=record["matches"], refresh=False)
                        if on_pair is not None:
                            on_pair(record)
        except KeyboardInterrupt as interrupt:
            run.outcome.interrupted = interrupt
        except (BagError, OutputError) as error:  # the bag could not be read or written further: report what was done
            stop_reason = str(error)
        finally:
            stop_reason = stop_reason or run.close_bag()
        if truth is not None:
            run.outcome.unscored = {**({"non-finite poses left out": truth.track.nonfinite}
                                       if truth.track.nonfinite else {}), **truth.unscored}
        if not run.records:
            if run.outcome.interrupted is not None:
                raise run.outcome.interrupted
            raise EvalError(stop_reason or no_pairs_reason(config, run.tally))
        try:
            with signals_deferred():
                run.outcome.document = build_document(config, matcher, run, time.perf_counter() - started,
                                                      expected, stop_reason)
                write_json(staging / METRICS_FILE, run.outcome.document.to_json())
                try:  # the report is drawn from metrics.json: without room for it, metrics.json is still kept
                    write_report(staging / REPORT_FILE, run.outcome)
                except OutputError as error:  # named by where it was going, not by the staging folder
                    problem = str(error).replace(str(staging.path), str(out_dir))
                    stop_reason = "; ".join(filter(None, (stop_reason, problem)))
                staging.publish(last=METRICS_FILE)
            if replaced and not stop_reason:  # else the error line says where the partial outputs went
                print(f"superglue-ros eval: replaced an earlier run's {', '.join(replaced)} in {out_dir}",
                      file=sys.stderr)
        except KeyboardInterrupt as late:  # arrived while writing: the outputs are complete, then it acts
            run.outcome.interrupted = run.outcome.interrupted or late
    finally:
        staging.discard()
    if stop_reason:
        raise EvalError(f"{stop_reason}; the {len(run.records)} pairs before it are in {out_dir} (marked partial)")
    return run.outcome


def check_replaceable(out_dir: Path) -> list[str]:
    """The outputs of an earlier run that this one replaces; a file of the same name that this tool did not
    write may not be replaced."""
    kinds = {METRICS_FILE: "file", REPORT_FILE: "file", OUTPUT_BAG: "folder"}
    for name, kind in kinds.items():  # links, FIFOs, devices: refused before anything opens them
        check_replaceable_item(out_dir / name, kind)
    existing = {name: out_dir / name for name in kinds if (out_dir / name).exists()}
    for name, path in existing.items():
        if not written_by_eval(name, path):
            raise EvalError(f"{path} exists and is not an output of superglue-ros eval; move it or choose "
                            f"another --out")
    return list(existing)


def written_by_eval(name: str, path: Path) -> bool:
    from .schema import SchemaError, load

    if name == METRICS_FILE:
        try:
            load(path)
        except SchemaError:
            return False
        return True
    try:  # regular files only (a FIFO would block), read up to a bound
        if name == REPORT_FILE:
            with regular_file(path, "report").open("rb") as report:
                return REPORT_MARKER.encode() in report.read(4096)
        text = read_bounded(path / "metadata.yaml", what="bag metadata").decode(errors="replace")
    except (InputFileError, OSError):
        return False
    topics = {line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("name:")}
    return bool(topics) and topics <= {EvalConfig.matches_topic, EvalConfig.homography_topic}


def no_pairs_reason(config: EvalConfig, tally: FrameTally) -> str:
    if tally.skipped:
        return (f"no pairs to evaluate: every frame or pair was skipped ({tally.skipped_summary()['total']}; "
                f"the first: {tally.examples[0]})")
    return (f"no pairs to evaluate: no {config.topic} frame had a partner (stereo pairs need header stamps "
            f"within --sync-tolerance {config.slop} s)")


def build_document(config: EvalConfig, matcher: Matcher, run: Run, wall_s: float, expected: int,
                   stop_reason: str) -> Document:
    """The metrics.json document: versioned, self-describing, with every per-pair record."""
    stereo = config.mode == "stereo" and not config.synthetic
    unpaired = run.tally.unpaired((config.topic, config.topic1 or "")) if stereo else None
    summary = summarise(run.records, run.outcome.score_counts, SkippedFrames(**run.tally.skipped_summary()), unpaired)
    inputs = asdict(config) | {"expected_pairs": expected, "homography": asdict(config.homography)}
    return Document(
        partial=run.outcome.interrupted is not None or bool(stop_reason),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), input=inputs,
        model={"name": matcher.model_name, "weights": matcher.weights_id, "device": str(matcher.device),
               "resize": matcher.resize, "extractor": dict(matcher.extractor.config),
               "superglue": dict(matcher.superglue.config)},
        wall_time_s=wall_s, summary=summary, pairs=run.records, stop_reason=stop_reason)
