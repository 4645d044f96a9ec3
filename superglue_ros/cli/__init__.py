"""One module per `superglue-ros` subcommand; see superglue_ros.cli."""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2, no traceback."""
