"""`superglue-ros bench`: per-stage speed, pair rate, memory; side by side with the reference; several cameras.

Without the official weights, the official architecture is benchmarked with
deterministic weights (speed does not depend on their values), and the
output says so; `--weights sift_open` benchmarks the bundled open model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import CommandError
from ..settings import MAX_THREADS
from .options import add_matcher_options, build_matcher, positive_int

DETERMINISTIC = "official architecture, deterministic weights"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="measure speed and memory",
        description="Time the pipeline on real frames (--images) or a generated textured sequence. Prints "
                    "per-stage median/p95, pairs/s, peak memory and SuperGlue GFLOP/s; with --reference, the "
                    "public reference timed interleaved with this package; with --cameras, several camera "
                    "streams batched against one by one.")
    add_matcher_options(parser)
    parser.set_defaults(resize=[640, 480])
    parser.add_argument("--images", metavar="DIR", help="folder of frames in name order (default: generated)")
    parser.add_argument("--mode", choices=("pair", "stream"), default="pair",
                        help="pair: two fresh frames per pair; stream: each new frame against the "
                             "previous, cached one (default: %(default)s)")
    parser.add_argument("--pairs", type=positive_int("--pairs"), default=10,
                        help="timed pairs, repetitions or rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=positive_int("--warmup", 0), default=2,
                        help="untimed pairs first (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int("--threads", 1, MAX_THREADS),
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--agreement", action="store_true",
                        help="also run exact fp32 on the same pairs and report the share of identical matches")
    parser.add_argument("--reference", metavar="DIR",
                        help="a checkout of magicleap/SuperGluePretrainedNetwork: time it and this package "
                             "interleaved per stage (superpoint, gnn, sinkhorn, pair, stream) on the same frames "
                             "and weights, and print the ratios with their spread")
    parser.add_argument("--cameras", type=positive_int("--cameras"), nargs="+", metavar="N",
                        help="camera counts (e.g. 1 2 4): each round matches one new frame per camera, as one "
                             "batch and one by one, and prints pairs/s, latency and the ratio")
    parser.add_argument("--cpu-load", type=positive_int("--cpu-load", 0), default=0, metavar="N",
                        help="time with N competing CPU-bound processes running (started after loading, "
                             "stopped afterwards) (default: %(default)s)")
    parser.add_argument("--json", metavar="OUT.json", help="write the measurements as JSON")
    parser.set_defaults(func=run)


def deterministic_weight_files(args: argparse.Namespace, folder: Path) -> bool:
    """Without official weights and without a model named, write deterministic ones for the official
    architecture into ``folder`` and point the options at them; True when it did."""
    import torch

    from ..inference.weights import deterministic_weights
    from ..inference.loading import official_available
    from ..models.superglue import SuperGlue
    from ..models.superpoint import SuperPoint

    if args.weights != "auto" or args.superpoint_weights or args.superglue_weights or official_available(
            args.weights_dir):
        return False
    for name, model in (("superpoint", SuperPoint()), ("superglue", SuperGlue())):
        torch.save(deterministic_weights(model), folder / f"{name}.pth")
        setattr(args, f"{name}_weights", str(folder / f"{name}.pth"))
    return True


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from ..bench.load import cpu_load
    from ..bench.speed import load_frames, machine_description
    from ..files.images import ImageReadError
    from ..files.outputs import check_outputs, write_bytes

    check_outputs([args.json], [args.images])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    size = tuple(args.resize) if len(args.resize) == 2 else (args.resize[0], args.resize[0] * 3 // 4)
    with tempfile.TemporaryDirectory(prefix="superglue_ros_bench_") as folder:
        deterministic = deterministic_weight_files(args, Path(folder))
        matcher = build_matcher(args, profile=True)
        label = f"{matcher.model_name} ({DETERMINISTIC})" if deterministic else matcher.model_name
        count = max(args.pairs + args.warmup, max(args.cameras or [1]) + 1) * 2 + 1
        try:
            frames = load_frames(args.images, count, size, max_pixels=args.max_image_pixels,
                                 keep=max(args.cameras or [1]) + 7)
        except ImageReadError as error:
            raise CommandError(str(error)) from None
        config = {"device": machine_description(matcher.device), "precision": args.precision, "mode": args.mode,
                  "size": f"{size[0]}x{size[1]}", "max_keypoints": args.max_keypoints,
                  "sinkhorn_iterations": matcher.superglue.config["sinkhorn_iterations"], "model": label,
                  "backend": args.backend,
                  "frames": args.images or "generated", "torch": torch.__version__, "cpu_load": args.cpu_load}
        with cpu_load(args.cpu_load):
            report = measure(args, matcher, frames, config, deterministic)
    if args.json is not None:
        write_bytes(args.json, json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}")
    return 0


def measure(args: argparse.Namespace, matcher: Any, frames: list, config: dict[str, Any],
            deterministic: bool) -> dict:
    """The measurement the options ask for, printed; its report. With deterministic weights the match count
    is no result, and the report says it measured speed only."""
    from tqdm import tqdm

    from ..bench.speed import benchmark, format_report

    if args.reference:
        return side_by_side_report(args, matcher, frames, config)
    if args.cameras:
        return cameras_report(args, matcher, frames, config)
    exact = build_matcher(args, precision="fp32", backend="torch") if args.agreement else None
    with tqdm(total=args.pairs + args.warmup, desc="bench", unit="pair", leave=False) as bar:
        result = benchmark(matcher, frames, args.mode, args.warmup, config, exact,
                           progress=lambda done, total: bar.update(1))
    report = result.as_dict() | {"speed_only": deterministic}
    if deterministic:
        report["matches_mean"] = None  # untrained weights: a count, not a result
    print(format_report(report))
    return report


def side_by_side_report(args: argparse.Namespace, matcher: Any, frames: list, config: dict[str, Any]) -> dict:
    import torch
    from tqdm import tqdm

    from ..bench.reference import ReferenceImplementation, format_side_by_side, side_by_side

    if args.backend == "onnxruntime" or not matcher.model_name.startswith("superpoint"):
        raise CommandError("--reference compares SuperPoint + SuperGlue in torch with the reference: use the "
                           "official weights (or none, for deterministic ones) and --backend torch or fixed")
    states = {"superpoint": matcher.extractor.state_dict(), "superglue": matcher.superglue.state_dict()}
    try:
        reference = ReferenceImplementation(args.reference, states, args.max_keypoints,
                                            matcher.superglue.config["sinkhorn_iterations"], matcher.device)
    except (FileNotFoundError, ImportError, RuntimeError) as error:
        raise CommandError(f"--reference {args.reference}: {error}") from None
    try:
        with tqdm(total=args.pairs + args.warmup, desc="side by side", unit="rep", leave=False) as bar:
            result = side_by_side(reference, matcher, frames, args.pairs, args.warmup, progress=lambda: bar.update())
    finally:
        reference.close()
    header = ", ".join(f"{k}={v}" for k, v in {**config, "threads": torch.get_num_threads()}.items())
    print(format_side_by_side(result, header))
    return {"schema_version": 3, "config": config, "reference": str(args.reference), **result.as_dict()}


def cameras_report(args: argparse.Namespace, matcher: Any, frames: list, config: dict[str, Any]) -> dict:
    from tqdm import tqdm

    from ..bench.cameras import camera_rounds, format_camera_rounds

    results = []
    with tqdm(total=(args.pairs + 1) * len(args.cameras), desc="cameras", unit="round", leave=False) as bar:
        for cameras in args.cameras:
            results.append(camera_rounds(matcher, frames, cameras, args.pairs, progress=lambda: bar.update()))
    print(", ".join(f"{k}={v}" for k, v in config.items()))
    print(format_camera_rounds(results))
    return {"schema_version": 3, "config": config, "cameras": results}
