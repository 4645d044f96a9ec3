"""`superglue-ros` command line: one subcommand per module of this package.

Each command module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` to a ``run(args) -> int``. Heavy optional dependencies
(rclpy, rosbags, onnxruntime, matplotlib) are imported inside ``run`` so
that a missing extra only affects the command that needs it. Every failure
a user can cause is one line on stderr and exit code 2; Ctrl-C exits 130
and SIGTERM (what launch systems, systemd and docker send) 143, after the
command has saved what it can.
"""
from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType

from ..files.images import ImageReadError
from ..files.outputs import OutputError
from . import CommandError
from .options import Parser

__all__ = ["CommandError", "Terminated", "build_parser", "main"]

COMMAND_MODULES = ("bench", "match", "node", "eval", "compare", "pairs", "weights", "train", "export_onnx")


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that every command's interrupt handling also serves it."""


def build_parser() -> Parser:
    parser = Parser(prog="superglue-ros", description="SuperPoint + SuperGlue feature matching for ROS 2 robots.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"superglue_ros.cli.{name}").register(subparsers)
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    try:
        args = build_parser().parse_args(argv[:len(argv) - len(ros_args)])
    except SystemExit as stop:  # --help, or a bad option (one line already printed)
        return int(stop.code or 0)
    args.ros_args = ros_args
    previous = signal.signal(signal.SIGTERM, _terminate) if args.command != "node" else None
    try:
        return int(args.func(args) or 0)
    except (CommandError, OutputError, ImageReadError) as error:
        print(f"superglue-ros {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"superglue-ros {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"superglue-ros {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
