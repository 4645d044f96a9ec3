"""Command-line options shared by the commands that build a Matcher (match, eval, bench, node)."""
from __future__ import annotations

import argparse
from typing import Any

from . import CommandError


def add_matcher_options(parser: argparse.ArgumentParser) -> None:
    from ..inference.matcher import MODEL_CHOICES, PRECISIONS

    group = parser.add_argument_group("model")
    group.add_argument("--weights", default="auto", metavar="{" + ",".join(MODEL_CHOICES) + "} or MODEL.pt",
                       help="official indoor/outdoor SuperGlue weights, the bundled open models sift_open and "
                            "sift_open_large, a model file from `superglue-ros train`, or auto: official indoor "
                            "when found, else sift_open (default: %(default)s)")
    group.add_argument("--weights-dir", help="folder with the weight files (before $SUPERGLUE_ROS_WEIGHTS_DIR "
                                             "and ~/.cache/superglue_ros)")
    group.add_argument("--superpoint-weights", help="explicit SuperPoint weight file")
    group.add_argument("--superglue-weights", help="explicit SuperGlue weight file")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--resize", type=int, nargs="+", metavar="N",
                       help="W H to resize to, or one number for the longer side; keypoints are "
                            "reported in original pixels")
    group.add_argument("--max-keypoints", type=int, default=1024,
                       help="SuperPoint keypoint budget, -1 for no limit (default: %(default)s)")
    group.add_argument("--keypoint-threshold", type=float, default=0.005, help="default: %(default)s")
    group.add_argument("--nms-radius", type=int, default=4, help="default: %(default)s")
    group.add_argument("--sinkhorn-iterations", type=int,
                       help="default: the model's (100 for the official weights)")
    group.add_argument("--match-threshold", type=float, help="default: the model's (0.2 for the official weights)")
    group.add_argument("--sinkhorn-tolerance", type=float,
                       help="stop Sinkhorn early once row marginals are this close (default 0: run all "
                            "iterations, the exact mode)")
    group.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS),
                       help="fp32 is exact; bf16 (CPU) / fp16 (CUDA) trade a few matches for speed "
                            "(default: %(default)s)")
    group.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                       help="run the networks in torch, or export them to ONNX and run them in onnxruntime "
                            "(fp32 only; default: %(default)s)")
    group.add_argument("--onnx-dir", help="with --backend onnxruntime: folder for the exported graphs, reused "
                                          "when they match (default: a temporary folder, re-exported each run)")


def matcher_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Matcher keyword arguments from the parsed options."""
    if args.resize is not None and len(args.resize) not in (1, 2):
        raise CommandError("--resize takes W H or a single number (the longer side)")
    resize = None if args.resize is None else args.resize[0] if len(args.resize) == 1 else tuple(args.resize)
    return {
        "weights": args.weights,
        "weights_dir": args.weights_dir,
        "superpoint_weights": args.superpoint_weights,
        "superglue_weights": args.superglue_weights,
        "device": args.device,
        "resize": resize,
        "superpoint": {"max_keypoints": args.max_keypoints, "keypoint_threshold": args.keypoint_threshold,
                       "nms_radius": args.nms_radius},
        "superglue": {name: value for name, value in (
            ("sinkhorn_iterations", args.sinkhorn_iterations), ("match_threshold", args.match_threshold),
            ("sinkhorn_tolerance", args.sinkhorn_tolerance)) if value is not None},
        "precision": args.precision,
        "backend": args.backend,
        "onnx_dir": args.onnx_dir,
    }


def build_matcher(args: argparse.Namespace, **overrides: Any):
    """A Matcher from the options; configuration and weight problems become one-line errors."""
    from ..inference.matcher import Matcher
    from ..inference.weights import WeightsError

    try:
        return Matcher(**{**matcher_kwargs(args), **overrides})
    except (ValueError, WeightsError) as error:
        raise CommandError(str(error)) from None
