"""`superglue-ros node`: run the ROS 2 matcher node without `ros2 run` (e.g. rclpy from PyPI wheels)."""
from __future__ import annotations

import argparse

from . import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "node", help="run the ROS 2 matcher node",
        description="Run the matcher node; parameters come from a YAML file (see config/matcher.yaml) and "
                    "everything from --ros-args on goes to ROS unchanged (remapping, parameters, log level).")
    parser.add_argument("--params-file", metavar="YAML", help="ROS 2 parameter file, e.g. config/matcher.yaml")
    parser.epilog = "example: superglue-ros node --params-file config/matcher.yaml --ros-args -r image:=/cam/image"
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..ros.node import main
    except ImportError as error:
        raise CommandError(f"ROS 2 is not importable ({error}); source your ROS 2 setup and this package's "
                           "install/setup.bash, or see the README for the PyPI-wheel setup") from None
    ros_args = list(args.ros_args) or ["--ros-args"]
    if args.params_file:
        ros_args[1:1] = ["--params-file", args.params_file]
    return main(["superglue-ros", *ros_args], signal_status=True)  # 130 after Ctrl-C, 143 after SIGTERM
