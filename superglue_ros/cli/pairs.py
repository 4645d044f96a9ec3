"""`superglue-ros pairs scenes|real|demo --out DIR`: image pairs with ground truth, for `eval`, `train` and
trying `match`.

``demo`` writes one pair of a generated textured scene under a known
homography, the quick start's sample images. ``scenes`` renders 3D scenes
(rooms, corridors, facades, tabletops) textured with photographs; each pair is a pure function of (seed, index), so a
validation split is fixed by its seed. ``real`` assembles real stereo pairs
with known poses from data that installs from package registries.
"""
from __future__ import annotations

import argparse

from . import CommandError
from ..settings import SEED
from .options import add_pixel_bound, checked, finite_float, positive_int

MAX_MIN_ROTATION = 70.0  # rendered pairs rotate by at most 75 degrees: leave room to draw from


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pairs", help="make pair lists with ground-truth poses (rendered or real)",
                                   description="Write image pairs and a pair list in the reference's format "
                                               "(name0 name1 rot0 rot1 K0 K1 T_0to1), for `eval PAIRS.txt --images "
                                               "DIR` and `train --scenes DIR`.")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    scenes = kinds.add_parser("scenes", help="render 3D scene pairs with depth maps")
    scenes.add_argument("--out", required=True, metavar="DIR", help="folder for the images, depth maps and pairs.txt")
    scenes.add_argument("--count", type=positive_int("--count"), default=100, help="pairs (default: %(default)s)")
    scenes.add_argument("--seed", type=checked(SEED.parse), default=SEED.default,
                        help="stream of pairs: use different seeds for training and validation (default: 0)")
    scenes.add_argument("--textures", metavar="DIR", help="folder of photographs to texture the scenes with "
                                                          "(default: procedural textures)")
    scenes.add_argument("--size", type=positive_int("--size", 64, 4096), nargs=2, metavar=("W", "H"),
                        default=(640, 480), help="image size (default: 640 480)")
    scenes.add_argument("--min-rotation", type=finite_float("--min-rotation", 0.0, MAX_MIN_ROTATION), default=0.0,
                        metavar="DEG", help="wide baselines: every pair's cameras differ by DEG to 75 degrees of "
                        "rotation, drawn uniformly (0: mostly 5-40; default: %(default)s)")
    scenes.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_pixel_bound(scenes, "texture photographs")
    real = kinds.add_parser("real", help="real stereo pairs with known poses (opencv-doc, scikit-image)")
    real.add_argument("--out", required=True, metavar="DIR", help="folder for the images and pairs.txt")
    demo = kinds.add_parser("demo", help="two sample images of a generated scene under a known homography")
    demo.add_argument("--out", required=True, metavar="DIR",
                      help="folder for image0.png, image1.png and homography.txt (H from image 0 to image 1)")
    demo.add_argument("--seed", type=checked(SEED.parse), default=SEED.default,
                      help="which scene and warp (default: %(default)s)")
    demo.add_argument("--size", type=positive_int("--size", 64, 4096), nargs=2, metavar=("W", "H"),
                      default=(640, 480), help="image size (default: 640 480)")
    parser.set_defaults(func=run)


def write_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    import cv2

    from ..data.homographies import demo_pair
    from ..files.outputs import check_outputs, write_bytes

    out = Path(args.out)
    paths = [out / "image0.png", out / "image1.png"]
    check_outputs([*paths, out / "homography.txt"], [], folder=out)
    image0, image1, h = demo_pair(args.seed, tuple(args.size))
    for path, image in zip(paths, (image0, image1)):
        write_bytes(path, cv2.imencode(".png", image)[1].tobytes())
    text = "# H: image0 pixels -> image1 pixels, homogeneous (x, y, 1)\n"
    write_bytes(out / "homography.txt", (text + "\n".join(" ".join(repr(float(v)) for v in row) for row in h)
                                         + "\n").encode())
    print(f"wrote {paths[0]} and {paths[1]} (true homography in {out / 'homography.txt'})")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..files.outputs import check_outputs

    if args.kind == "demo":
        return write_demo(args)
    check_outputs([Path(args.out) / "pairs.txt"], [getattr(args, "textures", None)], folder=args.out)
    if args.kind == "real":
        from ..data.real_pairs import write_real_pairs

        path, missing = write_real_pairs(args.out)
        count = sum(1 for _ in path.open())
        if not count:
            raise CommandError(f"none of the sources is installed: {'; '.join(missing)}")
        print(f"wrote {count} pairs to {path}" + (f"; not installed: {'; '.join(missing)}" if missing else ""))
        return 0
    import cv2
    from tqdm import tqdm

    from ..data.scenes import generate, write_pair_list
    from ..files.images import image_files, read_image

    textures = None
    if args.textures:  # as 8-bit colour, whatever the files hold (alpha, 16 bits, gray)
        textures = [read_image(path, args.max_image_pixels, cv2.IMREAD_COLOR) for path in image_files(args.textures)]
    pairs = tqdm(generate(args.seed, args.count, tuple(args.size), textures, min_rotation_deg=args.min_rotation),
                 total=args.count, unit="pair",
                 desc="render", disable=args.no_progress)
    path = write_pair_list(args.out, pairs, [f"{args.seed}_{i:05d}" for i in range(args.count)])
    print(f"wrote {args.count} pairs to {path}")
    return 0
