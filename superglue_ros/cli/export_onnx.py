"""`superglue-ros export-onnx --out DIR`: write superpoint.onnx and superglue.onnx for onboard runtimes."""
from __future__ import annotations

import argparse

from . import CommandError
from .options import add_matcher_options, matcher_kwargs, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx", help="export the networks to ONNX",
        description="Export SuperPoint (dynamic height/width; keypoint selection stays outside the graph) and "
                    "SuperGlue (dynamic keypoint counts; Sinkhorn iterations baked in and recorded in the "
                    "metadata) to ONNX. Of the model options only the weights, --sinkhorn-iterations and "
                    "--match-threshold (recorded as the default) affect the files.")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the two .onnx files into")
    parser.add_argument("--opset", type=positive_int("--opset", 14, 20), default=17,
                        help="ONNX opset version, 14 to 20 (default: %(default)s)")
    parser.add_argument("--sinkhorn", choices=("scaling", "log-domain"), default="scaling",
                        help="scaling: float64 scaling iterations, fast on onnxruntime; log-domain: the reference's "
                             "float32 iterations, for runtimes without float64 such as TensorRT "
                             "(default: %(default)s)")
    add_matcher_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..files.outputs import check_outputs
    from ..inference.backends.onnx_export import SUPERGLUE_FILE, SUPERPOINT_FILE, export_models
    from ..inference.loading import load_models
    from ..inference.weights import WeightsError
    from ..models.superpoint import SuperPoint

    kwargs = matcher_kwargs(args)
    check_outputs([Path(args.out) / SUPERPOINT_FILE, Path(args.out) / SUPERGLUE_FILE],
                  [kwargs["superpoint_weights"], kwargs["superglue_weights"], args.weights], folder=args.out)
    try:
        models = load_models(args.weights, kwargs["weights_dir"], kwargs["superpoint_weights"],
                             kwargs["superglue_weights"], kwargs["extractor"], kwargs["superglue"])
        if not isinstance(models.extractor, SuperPoint):
            raise CommandError(f"export-onnx exports SuperPoint + SuperGlue; {models.name} has no SuperPoint "
                               "(the official weights are needed)")
        paths = export_models(models.extractor, models.superglue, args.out, models.files, args.opset, args.sinkhorn)
    except (ValueError, WeightsError) as error:
        raise CommandError(str(error)) from None
    except ModuleNotFoundError as error:
        raise CommandError(f"{error.name} is needed for ONNX export: pip install 'superglue_ros[onnx]'") from None
    for path in paths:
        print(f"wrote {path}")
    return 0
