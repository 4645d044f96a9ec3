"""`superglue-ros match IMG0 IMG1`: match two image files, print counts and timing, write viz/JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import CommandError
from .options import add_matcher_options, build_matcher

VIZ_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("match", help="match two image files",
                                   description="Match two images with the keypoint extractor and SuperGlue.")
    parser.add_argument("image0", help="reference image file")
    parser.add_argument("image1", help="current image file")
    add_matcher_options(parser)
    parser.add_argument("--viz", metavar="OUT.png", help="write a picture of the matches (coloured by confidence)")
    parser.add_argument("--json", metavar="OUT.json", help="write keypoints, matches and timing as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..files.outputs import check_outputs
    from ..files.images import read_image

    if args.viz is not None and Path(args.viz).suffix.lower() not in VIZ_SUFFIXES:
        raise CommandError(f"--viz {args.viz}: use a picture file name ({', '.join(VIZ_SUFFIXES)})")
    check_outputs((args.viz, args.json), (args.image0, args.image1))
    images = [read_image(path, args.max_image_pixels) for path in (args.image0, args.image1)]
    matcher = build_matcher(args)
    try:
        pair = matcher.match(*images)
    except ValueError as error:  # e.g. an unsupported channel count
        raise CommandError(str(error)) from None
    points0, points1, confidences = pair.matched_points()
    timings = ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in pair.timings.items())
    print(f"image0: {len(pair.features0)} keypoints, image1: {len(pair.features1)} keypoints, "
          f"{len(confidences)} matches ({timings})")
    if args.viz is not None:
        write_viz(args.viz, images, points0, points1, confidences, matcher.model_name)
        print(f"wrote {args.viz}")
    if args.json is not None:
        from ..files.outputs import write_bytes

        write_bytes(args.json, json.dumps(result_json(pair, matcher), indent=1).encode())
        print(f"wrote {args.json}")
    return 0


def write_viz(path: str, images: list[np.ndarray], points0: np.ndarray, points1: np.ndarray,
              confidences: np.ndarray, label: str) -> None:
    from ..files.images import write_image
    from ..viz import draw_matches

    canvas = draw_matches(images[0], images[1], points0, points1, confidences, f"{label}: {len(confidences)} matches")
    write_image(path, canvas)


def image_size(height_width: tuple[int, int]) -> dict[str, int]:
    return {"width": int(height_width[1]), "height": int(height_width[0])}


def result_json(pair: Any, matcher: Any) -> dict[str, Any]:
    return {
        "model": matcher.model_name,
        "weights": matcher.weights_id,
        "image_size0": image_size(pair.features0.image_size),  # named fields: --resize takes W H, tensors H, W
        "image_size1": image_size(pair.features1.image_size),
        "keypoints0": pair.features0.keypoints.cpu().tolist(),
        "keypoints1": pair.features1.keypoints.cpu().tolist(),
        "matches": pair.result.pairs().cpu().tolist(),
        "confidences": pair.result.confidences().cpu().tolist(),
        "timings_s": pair.timings,
    }
