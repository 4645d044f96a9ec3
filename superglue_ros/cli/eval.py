"""`superglue-ros eval SOURCE`: replay a recording, a folder or a pair list through the matcher and measure it."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ..eval.config import (MAX_BAD_FRAMES, MAX_PAIRS, MODE, POSE_SETTINGS, STORAGE, STRIDE, SYNTHETIC_SETTINGS)
from . import CommandError
from .options import add_matcher_options, add_parameter_options, add_settings, build_matcher, check_resize

PAIR_LIST_SUFFIXES = (".txt", ".pairs")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate matching on a rosbag, an image folder or a pair list with ground truth",
        description="Replay image topics of a rosbag2 (sqlite3/mcap) or ROS 1 bag, or the images of a "
                    "folder (topic 'images', file-name order), through the matcher; write metrics.json, "
                    "report.html and a bag with the Matches/Homography messages the live node would publish. "
                    "A pair list (PAIRS.txt with --images DIR, in the reference's format) is scored on its "
                    "ground-truth poses as the SuperGlue paper scores them.")
    parser.add_argument("source", help="rosbag2 folder (or its .db3/.mcap file), ROS 1 .bag file, folder of "
                                       "images, or pair list (.txt) with --images")
    parser.add_argument("--topic", help="image topic (sensor_msgs/Image or CompressedImage); "
                                        "omit to list the image topics")
    parser.add_argument("--topic1", help="second camera's image topic (stereo mode)")
    add_settings(parser, (MODE, STRIDE, MAX_PAIRS, MAX_BAD_FRAMES))
    parser.add_argument("--out", default="eval_out", help="output folder (default: %(default)s)")
    add_settings(parser, (STORAGE,))
    add_parameter_options(parser, ("homography", "pairing"), "homography and stereo pairing")
    synthetic = parser.add_argument_group("synthetic homography benchmark")
    synthetic.add_argument("--synthetic-homography", action="store_true",
                           help="match each frame against a random warp of itself and score against the warp")
    add_settings(synthetic, SYNTHETIC_SETTINGS)
    synthetic.add_argument("--no-photometric", action="store_true", help="no brightness/contrast/noise changes")
    pose = parser.add_argument_group("ground-truth poses")
    pose.add_argument("--images", metavar="DIR", help="pair list: the folder its image names are relative to")
    pose.add_argument("--gt-topic", help="PoseStamped, PoseWithCovarianceStamped, Odometry, TransformStamped "
                                         "or /tf topic with the camera-to-world pose")
    pose.add_argument("--camera-info-topic", help="CameraInfo topic (default: the image topic's sibling "
                                                  "camera_info, or the only CameraInfo topic)")
    add_settings(pose, POSE_SETTINGS)
    add_matcher_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def list_topics(bag_path: str) -> str:
    from ..eval.bagio import open_bag

    with open_bag(bag_path) as bag:
        topics = bag.image_topics()
        counts = {name: bag.count(name) for name in topics}
    listing = ", ".join(f"{name} ({kind.rsplit('/', 1)[-1]}, {counts[name]} msgs)"
                        for name, kind in sorted(topics.items()))
    return f"--topic is required; image topics in {bag_path}: {listing or 'none'}"


def is_pair_list(args: argparse.Namespace) -> bool:
    return args.images is not None or (Path(args.source).is_file() and
                                       Path(args.source).suffix.lower() in PAIR_LIST_SUFFIXES)


def eval_config(args: argparse.Namespace, folder: bool) -> Any:
    from ..eval.bagio import IMAGE_FOLDER_TOPIC
    from ..eval.config import REFERENCE_RESIZE, EvalConfig
    from ..inference.pipeline import HomographySettings

    pair_list = is_pair_list(args)
    if pair_list and args.images is None:
        raise CommandError(f"{args.source} is a pair list: give --images DIR, the folder its names are relative to")
    return EvalConfig(
        source=args.source, topic=args.topic or (IMAGE_FOLDER_TOPIC if folder else ""), topic1=args.topic1,
        mode=args.mode, stride=args.stride, max_pairs=args.max_pairs, synthetic=args.synthetic_homography,
        strength=args.strength, warps=args.warps, seed=args.seed, photometric=not args.no_photometric,
        homography=HomographySettings(args.homography_method, args.reprojection_threshold, args.min_matches),
        slop=args.slop, gt_topic=args.gt_topic, camera_info_topic=args.camera_info_topic,
        gt_tolerance=args.gt_tolerance, storage=args.storage, images=args.images,
        resize=tuple(args.resize or REFERENCE_RESIZE) if pair_list else None, max_bad_frames=args.max_bad_frames)


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from ..eval.bagio import BagError, is_image_folder, open_bag
    from ..eval.config import EvalError
    from ..eval.pairlist import PairListSource
    from ..eval.run import evaluate
    from ..files.outputs import check_outputs

    check_outputs([], [args.source, args.images], folder=args.out)
    check_resize(args.resize, args.max_image_pixels, is_pair_list(args))
    out_dir = Path(args.out)
    try:
        config = eval_config(args, is_image_folder(args.source))
        if not config.topic and not config.pair_list:
            raise CommandError(list_topics(args.source))
        config.check()
        opened = nullcontext(PairListSource(config.source, config.images, config.resize)) if config.pair_list \
            else open_bag(config.source)
        with opened as source:
            if not config.pair_list:
                source.check_image_topic(config.topic)
            overrides = {"resize": None} if config.pair_list else {}  # a pair list is resized as the reference does
            matcher = build_matcher(args, **overrides)
            try:
                outcome = evaluate(source, config, matcher, out_dir, progress=not args.no_progress)
            except KeyboardInterrupt:
                print("superglue-ros eval: interrupted before the first pair finished; nothing written",
                      file=sys.stderr)
                raise
    except (BagError, EvalError) as error:
        raise CommandError(str(error)) from None
    print(summary_line(outcome.document))
    if outcome.unscored_text():
        print(f"superglue-ros eval: warning: {outcome.unscored_text()}", file=sys.stderr)
    outputs = [out_dir / "metrics.json", out_dir / "report.html"]
    if not (config.synthetic or config.pair_list):
        outputs.append(out_dir / "matches_bag")
    print(f"wrote {', '.join(map(str, outputs))}" + (" (partial)" if outcome.document.partial else ""))
    if outcome.interrupted is not None:
        print(f"superglue-ros eval: interrupted after {outcome.document.summary.pairs} pairs; partial report in "
              f"{out_dir} (marked partial)", file=sys.stderr)
        raise outcome.interrupted
    return 0


def summary_line(document: Any) -> str:
    """One line with the headline numbers of a :class:`~superglue_ros.eval.schema.Document`, for logs and CI."""
    summary = document.summary
    text = (f"{summary.pairs} pairs: median {summary.matches.median:.0f} matches, "
            f"{summary.inliers.median:.0f} inliers, valid H {summary.homography_valid_rate:.0%}, "
            f"total {summary.timing_ms['total'].median:.1f} ms/pair (median)")
    if summary.skipped_frames.total:
        text += f"; skipped {summary.skipped_frames.total} (" + ", ".join(
            f"{reason} {count}" for reason, count in summary.skipped_frames.by_reason.items()) + ")"
    if summary.unpaired_frames:
        text += "; without a stereo partner: " + ", ".join(
            f"{topic} {count}" for topic, count in summary.unpaired_frames.items())
    if summary.synthetic is not None:
        text += synthetic_text(summary.synthetic)
    if summary.pose is not None:
        text += pose_text(summary.pose)
    return text


def synthetic_text(synthetic: Any) -> str:
    sg, mnn, ratio = (synthetic.methods[name] for name in ("superglue", "mnn", "mnn_ratio"))
    text = (f"; synthetic P/R {sg.precision:.3f}/{sg.recall:.3f} (MNN {mnn.precision:.3f}/{mnn.recall:.3f}, "
            f"MNN+ratio {ratio.precision:.3f}/{ratio.recall:.3f}), AUC@3px {sg.auc['3px']:.3f} "
            f"(MNN {mnn.auc['3px']:.3f}, MNN+ratio {ratio.auc['3px']:.3f})")
    gain = synthetic.extras["gain_vs_ratio_test"]
    low, high = gain["auc@3px_ci95"]
    if all(isinstance(v, float) and math.isfinite(v) for v in (low, high)):  # NaN/null: one image
        text += (f"; AUC@3px gain over MNN+ratio {gain['auc@3px']:+.3f}, "
                 f"95% CI over images [{low:+.3f}, {high:+.3f}]")
    point = synthetic.extras["precision_at_equal_recall"]["mnn_ratio"]
    if isinstance(point["threshold"], float) and math.isfinite(point["threshold"]):
        text += (f"; at MNN+ratio's recall or more, precision {point['precision_pooled']:.4f} "
                 f"(threshold {point['threshold']:.2f}) vs {ratio.precision_pooled:.4f}")
    return text


def pose_text(pose: Any) -> str:
    def scores(method: Any) -> str:
        aucs = "/".join(f"{100 * value:.1f}" for value in method.auc.values())
        intervals = [percent_interval(method.auc_ci95.get(key)) for key in method.auc]
        return (f"AUC@5/10/20deg {aucs}" + (f" {'/'.join(intervals)}" if all(intervals) else "")
                + f", precision {100 * (method.precision or 0):.1f}%" + (
                    f" {interval}" if (interval := percent_interval(method.precision_ci95)) else ""))

    text = (f"; pose {scores(pose.superglue)}, matching score {100 * (pose.superglue.matching_score or 0):.1f}% "
            f"over {pose.superglue.scored_pairs} pairs")
    if pose.superglue.failures:
        text += " (no pose: " + ", ".join(f"{reason} {n}" for reason, n in pose.superglue.failures.items()) + ")"
    ratio = pose.baselines.get("mnn_ratio")
    text += f" (MNN+ratio {scores(ratio)})" if ratio is not None else ""
    if pose.intervals:
        text += (f"; [95% intervals: {pose.intervals['method']}, {pose.intervals['resamples']} resamples of "
                 f"{pose.intervals['resampled']}]")
    return text


def percent_interval(bounds: list[float] | None) -> str:
    """[low-high] in percent; empty where there is no interval (older files, fewer than two pairs)."""
    if bounds is None or not all(isinstance(v, float) and math.isfinite(v) for v in bounds):
        return ""
    return f"[{100 * bounds[0]:.1f}-{100 * bounds[1]:.1f}]"
