"""`superglue-ros match IMG0 IMG1`: match two image files, print counts and timing, write viz/JSON."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import CommandError
from .options import add_matcher_options, build_matcher


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("match", help="match two image files",
                                   description="Match two images with SuperPoint + SuperGlue.")
    parser.add_argument("image0", help="reference image file")
    parser.add_argument("image1", help="current image file")
    add_matcher_options(parser)
    parser.add_argument("--viz", metavar="OUT.png", help="write a picture of the matches (coloured by confidence)")
    parser.add_argument("--json", metavar="OUT.json", help="write keypoints, matches and timing as JSON")
    parser.set_defaults(func=run)


def read_image(path: str) -> np.ndarray:
    """Image file as stored (8/16-bit, mono/colour); one-line error when it cannot be decoded."""
    import cv2

    if not Path(path).is_file():
        raise CommandError(f"cannot read image {path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise CommandError(f"cannot read image {path}: not a decodable image")
    return image


def run(args: argparse.Namespace) -> int:
    image0, image1 = read_image(args.image0), read_image(args.image1)
    matcher = build_matcher(args)
    try:
        pair = matcher.match(image0, image1)
    except ValueError as error:  # e.g. unsupported dtype or channel count
        raise CommandError(str(error)) from None
    points0, points1, confidences = pair.matched_points()
    timings = ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in pair.timings.items())
    print(f"image0: {len(pair.features0)} keypoints, image1: {len(pair.features1)} keypoints, "
          f"{len(confidences)} matches ({timings})")
    if args.viz:
        write_viz(args.viz, image0, image1, points0, points1, confidences, matcher.model_name)
        print(f"wrote {args.viz}")
    if args.json:
        write_atomic(args.json, json.dumps(result_json(pair, matcher), indent=1).encode())
        print(f"wrote {args.json}")
    return 0


def write_viz(path: str, image0, image1, points0, points1, confidences, label: str) -> None:
    import cv2

    from ..viz import draw_matches

    canvas = draw_matches(image0, image1, points0, points1, confidences, f"{label}: {len(confidences)} matches")
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", canvas)
    if not ok:
        raise CommandError(f"cannot encode {path}: use a .png or .jpg file name")
    write_atomic(path, encoded.tobytes())


def result_json(pair, matcher) -> dict:
    return {
        "model": matcher.model_name,
        "weights": matcher.weights_id,
        "image_size0": list(pair.features0.image_size),
        "image_size1": list(pair.features1.image_size),
        "keypoints0": pair.features0.keypoints.cpu().tolist(),
        "keypoints1": pair.features1.keypoints.cpu().tolist(),
        "matches": pair.result.pairs().cpu().tolist(),
        "confidences": pair.result.confidences().cpu().tolist(),
        "timings_s": pair.timings,
    }


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary name beside the target, then rename: no half-written outputs."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
