"""`superglue-ros eval BAG --topic T`: replay a recording through the matcher and measure it."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import CommandError
from .options import add_matcher_options, build_matcher


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate matching on a rosbag or image folder (metrics.json, report.html, output bag)",
        description="Replay image topics of a rosbag2 (sqlite3/mcap) or ROS 1 bag, or the images of a "
                    "folder (topic 'images', file-name order), through SuperPoint + SuperGlue; write "
                    "metrics.json, report.html and a bag with the Matches/Homography messages the live "
                    "node would publish.")
    parser.add_argument("bag", help="rosbag2 folder (or its .db3/.mcap file), ROS 1 .bag file, or a folder "
                                    "of images")
    parser.add_argument("--topic", help="image topic (sensor_msgs/Image or CompressedImage); "
                                        "omit to list the image topics")
    parser.add_argument("--topic1", help="second camera's image topic (stereo mode)")
    parser.add_argument("--mode", default="sequential", choices=("sequential", "stereo"),
                        help="sequential: each selected frame against the previous selected one; "
                             "stereo: --topic against --topic1 (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=1, help="use every K-th frame of --topic (default: 1)")
    parser.add_argument("--max-pairs", type=int, help="stop after N pairs")
    parser.add_argument("--sync-tolerance", type=float, default=0.02,
                        help="stereo: max header stamp difference [s] (default: %(default)s)")
    parser.add_argument("--out", default="eval_out", help="output folder (default: %(default)s)")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"),
                        help="output bag storage (default: %(default)s)")
    parser.add_argument("--ransac-threshold", type=float, default=3.0,
                        help="homography inlier threshold [px] (default: %(default)s)")
    synthetic = parser.add_argument_group("synthetic homography benchmark")
    synthetic.add_argument("--synthetic-homography", action="store_true",
                           help="match each frame against a random warp of itself and score against the warp")
    synthetic.add_argument("--strength", type=float, default=1.0, help="warp strength (default: %(default)s)")
    synthetic.add_argument("--warps", type=int, default=1,
                           help="random warps per frame, each one pair (default: %(default)s)")
    synthetic.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    synthetic.add_argument("--no-photometric", action="store_true", help="no brightness/contrast/noise changes")
    pose = parser.add_argument_group("ground-truth poses")
    pose.add_argument("--gt-topic", help="PoseStamped, PoseWithCovarianceStamped, Odometry, TransformStamped "
                                         "or /tf topic with the camera-to-world pose")
    pose.add_argument("--camera-info-topic", help="CameraInfo topic (default: the image topic's sibling "
                                                  "camera_info, or the only CameraInfo topic)")
    pose.add_argument("--gt-tolerance", type=float, default=0.05,
                      help="max stamp difference between a frame and its pose [s] (default: %(default)s)")
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


def run(args: argparse.Namespace) -> int:
    from ..eval.bagio import IMAGE_FOLDER_TOPIC, BagError, is_image_folder, open_bag
    from ..eval.run import EvalConfig, EvalError, evaluate

    folder = is_image_folder(args.bag)
    config = EvalConfig(
        bag=args.bag, topic=args.topic or (IMAGE_FOLDER_TOPIC if folder else ""), topic1=args.topic1,
        mode=args.mode, stride=args.stride, max_pairs=args.max_pairs, synthetic=args.synthetic_homography,
        strength=args.strength, warps=args.warps, seed=args.seed, photometric=not args.no_photometric,
        ransac_threshold=args.ransac_threshold,
        sync_tolerance=args.sync_tolerance, gt_topic=args.gt_topic, camera_info_topic=args.camera_info_topic,
        gt_tolerance=args.gt_tolerance, storage=args.storage)
    out_dir = Path(args.out)
    try:
        if not config.topic:
            raise CommandError(list_topics(args.bag))
        config.check()
        with open_bag(args.bag) as bag:
            bag.check_image_topic(config.topic)
            matcher = build_matcher(args)
            try:
                outcome = evaluate(bag, config, matcher, out_dir, progress=not args.no_progress)
            except KeyboardInterrupt:
                print(f"superglue-ros eval: interrupted; partial report in {out_dir} (marked partial)",
                      file=sys.stderr)
                return 130
    except (BagError, EvalError) as error:
        raise CommandError(str(error)) from None
    print(summary_line(outcome.metrics))
    print(f"wrote {out_dir / 'metrics.json'}, {out_dir / 'report.html'}"
          + ("" if config.synthetic else f", {out_dir / 'matches_bag'}"))
    return 0


def summary_line(document: dict) -> str:
    """One line with the headline numbers, for logs and CI."""
    summary = document["summary"]
    text = (f"{summary['pairs']} pairs: median {summary['matches']['median']:.0f} matches, "
            f"{summary['inliers']['median']:.0f} inliers, valid H {summary['homography_valid_rate']:.0%}, "
            f"total {summary['timing_ms']['total']['median']:.1f} ms/pair (median)")
    unpaired = summary.get("unpaired_frames")
    if unpaired:
        text += "; without a stereo partner: " + ", ".join(f"{topic} {count}" for topic, count in unpaired.items())
    synthetic = summary.get("synthetic_homography")
    if synthetic:
        sg, mnn, ratio = synthetic["superglue"], synthetic["mnn"], synthetic["mnn_ratio"]
        text += (f"; synthetic P/R {sg['precision']:.3f}/{sg['recall']:.3f} (MNN {mnn['precision']:.3f}/"
                 f"{mnn['recall']:.3f}, MNN+ratio {ratio['precision']:.3f}/{ratio['recall']:.3f}), "
                 f"AUC@3px {sg['auc']['3px']:.3f} (MNN {mnn['auc']['3px']:.3f}, "
                 f"MNN+ratio {ratio['auc']['3px']:.3f})")
        gain = synthetic["gain_vs_ratio_test"]
        low, high = gain["auc@3px_ci95"]
        if all(isinstance(v, float) and math.isfinite(v) for v in (low, high)):  # NaN/null: one image
            text += (f"; AUC@3px gain over MNN+ratio {gain['auc@3px']:+.3f}, "
                     f"95% CI over images [{low:+.3f}, {high:+.3f}]")
        point = synthetic["precision_at_equal_recall"]["mnn_ratio"]
        if math.isfinite(point["threshold"]):
            text += (f"; at MNN+ratio's recall or more, precision {point['precision_pooled']:.4f} "
                     f"(threshold {point['threshold']:.2f}) vs {ratio['precision_pooled']:.4f}")
    return text
