"""`superglue-ros` command line: one subcommand per module of this package.

Each command module exposes ``register(subparsers)``, which adds its parser
and sets ``func`` to a ``run(args) -> int``. Heavy optional dependencies
(rclpy, rosbags, onnxruntime, matplotlib) are imported inside ``run`` so
that a missing extra only affects the command that needs it. Every failure
a user can cause is one line on stderr and exit code 2; Ctrl-C exits 130,
SIGTERM (what launch systems, systemd and docker send) 143 and SIGHUP (a
closed terminal or SSH session) 129, after the command has saved what it can.
"""
from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
from contextlib import suppress
from types import FrameType
from typing import Any, TextIO

from ..files.images import ImageReadError
from ..files.inputs import InputFileError
from ..files.outputs import OutputError, describe, shown
from . import CommandError
from .options import Parser

__all__ = ["CommandError", "Terminated", "build_parser", "main"]

COMMAND_MODULES = ("bench", "match", "node", "eval", "compare", "pairs", "weights", "train", "export_onnx")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, delivered like Ctrl-C so that every command's interrupt handling also serves it."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__()
        self.signum = signum


def build_parser() -> Parser:
    parser = Parser(prog="superglue-ros", description="SuperPoint + SuperGlue feature matching for ROS 2 robots.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"superglue_ros.cli.{name}").register(subparsers)
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


class StdoutFailed(Exception):
    """Standard output could not be written: its reader went away (a pipe into ``head``) or its disk is full."""

    def __init__(self, error: OSError) -> None:
        super().__init__(describe(error))
        self.error = error


class GuardedOutput:
    """sys.stdout whose write failures are a :class:`StdoutFailed`, told apart from the command's own
    OSErrors (a file it reads or writes)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream  # None: started with stdout closed

    def write(self, text: str) -> int:
        try:
            if self.stream is None:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            return self.stream.write(text)
        except OSError as error:
            raise StdoutFailed(error) from None

    def flush(self) -> None:
        try:
            if self.stream is not None:
                self.stream.flush()
        except OSError as error:
            raise StdoutFailed(error) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a closed pipe on stdout ends it quietly (141, as if by SIGPIPE), a full one with
    one line (2), never with a traceback at exit."""
    stdout, sys.stdout = sys.stdout, GuardedOutput(sys.stdout)
    try:
        code = run(argv)
        sys.stdout.flush()
        return code
    except StdoutFailed as failure:
        with suppress(OSError, ValueError, AttributeError):  # the interpreter's last flush goes nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        if isinstance(failure.error, BrokenPipeError):
            return 128 + signal.SIGPIPE
        print(f"superglue-ros: error: cannot write to standard output: {failure}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


def run(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    try:
        args = build_parser().parse_args(argv[:len(argv) - len(ros_args)])
    except SystemExit as stop:  # --help, or a bad option (one line already printed)
        return int(stop.code or 0)
    args.ros_args = ros_args
    previous = {} if args.command == "node" else {
        number: signal.signal(number, _terminate) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return int(args.func(args) or 0)
    except (CommandError, OutputError, ImageReadError, InputFileError) as error:
        print(f"superglue-ros {args.command}: error: {shown(str(error))}", file=sys.stderr)  # one line, always
        return 2
    except Terminated as ended:
        print(f"superglue-ros {args.command}: {'hung up' if ended.signum == signal.SIGHUP else 'terminated'}",
              file=sys.stderr)
        return 128 + ended.signum
    except KeyboardInterrupt:
        print(f"superglue-ros {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
