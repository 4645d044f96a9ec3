"""`superglue-ros bench`: per-stage speed, pair rate, memory and GFLOP/s of the matcher."""
from __future__ import annotations

import argparse
import json

from . import CommandError
from .options import add_matcher_options, build_matcher, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure speed and memory",
        description="Time the pipeline on real frames (--images) or a generated textured sequence. "
                    "Prints per-stage median/p95, pairs/s, peak memory and SuperGlue GFLOP/s.")
    add_matcher_options(parser)
    parser.set_defaults(resize=[640, 480])
    parser.add_argument("--images", metavar="DIR", help="folder of frames in name order (default: generated)")
    parser.add_argument("--mode", choices=("pair", "stream"), default="pair",
                        help="pair: two fresh frames per pair; stream: each new frame against the "
                             "previous, cached one (default: %(default)s)")
    parser.add_argument("--pairs", type=positive_int("--pairs"), default=10, help="timed pairs (default: %(default)s)")
    parser.add_argument("--warmup", type=positive_int("--warmup", 0), default=2,
                        help="untimed pairs first (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int("--threads"), help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--agreement", action="store_true",
                        help="also run exact fp32 on the same pairs and report the share of identical matches")
    parser.add_argument("--json", metavar="OUT.json", help="write the measurements as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..bench.speed import benchmark, format_report, load_frames, machine_description
    from ..io import ImageReadError, check_writable, write_bytes

    if args.json:
        check_writable(args.json)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    matcher = build_matcher(args, profile=True)
    size = tuple(args.resize) if len(args.resize) == 2 else (args.resize[0], args.resize[0] * 3 // 4)
    per_pair = 1 if args.mode == "stream" else 2
    try:
        frames = load_frames(args.images, (args.pairs + args.warmup) * per_pair + 1, size)
    except ImageReadError as error:
        raise CommandError(str(error)) from None
    exact = build_matcher(args, precision="fp32") if args.agreement else None
    config = {"device": machine_description(matcher.device), "precision": args.precision, "mode": args.mode,
              "size": f"{size[0]}x{size[1]}", "max_keypoints": args.max_keypoints,
              "sinkhorn_iterations": matcher.superglue.config["sinkhorn_iterations"],
              "sinkhorn_tolerance": matcher.superglue.config["sinkhorn_tolerance"], "model": matcher.model_name,
              "frames": args.images or "generated", "torch": torch.__version__}
    with tqdm(total=args.pairs + args.warmup, desc="bench", unit="pair", leave=False) as bar:
        result = benchmark(matcher, frames, args.mode, args.warmup, config, exact,
                           progress=lambda done, total: bar.update(1))
    report = result.as_dict()
    print(format_report(report))
    if args.json:
        write_bytes(args.json, json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}")
    return 0
