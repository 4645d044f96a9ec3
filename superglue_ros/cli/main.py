"""`superglue-ros` command line: one subcommand per module in ``superglue_ros.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` to a ``run(args) -> int``. Heavy optional dependencies
(rclpy, rosbags, onnxruntime, matplotlib) are imported inside ``run`` so
that ``superglue-ros --help`` works on a minimal install.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import CommandError

__all__ = ["CommandError", "build_parser", "main"]

COMMAND_MODULES = (
    "bench",
    "match",
    "node",
    "eval", "compare",
    "weights",
    "train",
    "export_onnx",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superglue-ros", description="SuperPoint + SuperGlue feature matching for ROS 2 robots.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"superglue_ros.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[:len(argv) - len(ros_args)])
    args.ros_args = ros_args
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"superglue-ros {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"superglue-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
