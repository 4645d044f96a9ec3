"""`superglue-ros train --images DIR`: self-supervised SuperGlue training on random homographies."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..train.config import DEFAULT_CROP, FLAGS, SETTINGS, THREADS
from . import CommandError
from .options import add_pixel_bound, add_settings, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train SuperGlue on single images (random homographies)",
        description="Train SuperGlue from a folder of unlabelled images: each step warps random views with "
                    "random homographies and photometric noise, labels keypoints by reprojection and minimises "
                    "the negative log-likelihood of the true assignment. One image in ten (fixed by name) "
                    "is held back for the validation precision/recall shown in the progress bar.")
    parser.add_argument("--images", required=True, help="folder of training images")
    add_settings(parser, (*SETTINGS, THREADS), FLAGS)
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
    parser.add_argument("--scenes", metavar="DIR",
                        help="also train on the rendered 3D pairs of this folder (superglue-ros pairs scenes): real "
                             "parallax and occlusion, labelled from depth; one pair in ten validates")
    parser.add_argument("--crop", type=positive_int("--crop", 16), nargs=2, metavar=("H", "W"), default=DEFAULT_CROP,
                        help="size of the random training views (default: %(default)s)")
    add_pixel_bound(parser, "training and scene images")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..files.outputs import check_outputs, refuse_inputs
    from ..train.config import TrainConfig
    from ..train.loop import checkpoint_path, train
    from ..inference.weights import WeightsError

    if args.min_keypoints is not None and args.min_keypoints > args.num_keypoints:
        raise CommandError(f"--min-keypoints must be at most --keypoints ({args.num_keypoints})")
    if args.keypoint_imbalance > 1.0 and (args.min_keypoints or args.num_keypoints) >= args.num_keypoints:
        raise CommandError("--keypoint-imbalance needs --min-keypoints below --keypoints: image 1's count "
                           "stays within that range")
    if args.scale_orientation and args.extractor != "sift":
        raise CommandError("--scale-orientation needs --extractor sift (SuperPoint keypoints have no scale "
                           "or orientation)")
    if args.contrast_threshold is not None and args.extractor != "sift":
        raise CommandError("--contrast-threshold applies to --extractor sift")
    if not Path(args.images).is_dir():
        raise CommandError(f"--images {args.images}: not a folder")
    if min(args.crop) < 16:
        raise CommandError("--crop H W must be at least 16 pixels each")
    if args.scenes and not (Path(args.scenes) / "pairs.txt").is_file():
        raise CommandError(f"--scenes {args.scenes}: no pairs.txt (make one with superglue-ros pairs scenes)")
    if args.init and args.start != "random":
        raise CommandError("--start applies to a model without --init (that model's weights are the start)")
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
    config = TrainConfig(images=args.images, out=args.out, resume=args.resume, init=args.init, crop=tuple(args.crop),
                         scale_orientation=args.scale_orientation, scenes=args.scenes,
                         max_image_pixels=args.max_image_pixels,
                         **{setting.name: getattr(args, setting.name) for setting in SETTINGS})
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
