"""The `superglue-ros` command: one module per subcommand, entry point in :mod:`.main`."""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2, no traceback."""
