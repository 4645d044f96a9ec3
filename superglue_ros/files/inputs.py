"""Input files opened only when they are regular files, and read only up to a bound.

A FIFO or a device where a file is expected would block the command or
feed it without end (``/dev/zero`` as a pair list); a multi-gigabyte text
file would be read whole. Both are one-line :class:`InputFileError`\\ s,
before anything is read.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .outputs import describe, kind_of, shown

TEXT_LIMIT = 256 << 20  # pair lists, metrics.json, metadata: far above any real one


class InputFileError(ValueError):
    """An input that is not a readable regular file, or larger than its bound; one line for the user."""


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` (links followed) if it is a regular file; a folder, FIFO, device, socket or a missing or
    unreachable path is an error naming it."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputFileError(f"cannot read {what} {shown(path)}: no such file") from None
    except OSError as error:
        raise InputFileError(f"cannot read {what} {shown(path)}: {describe(error)}") from None
    if not stat.S_ISREG(mode):
        raise InputFileError(f"cannot read {what} {shown(path)}: it is {kind_of(mode)}, not a regular file")
    return path


def read_bounded(path: str | os.PathLike, limit: int = TEXT_LIMIT, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    path = regular_file(path, what)
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as error:
        raise InputFileError(f"cannot read {what} {shown(path)}: {describe(error)}") from None
    if len(data) > limit:
        raise InputFileError(f"cannot read {what} {shown(path)}: larger than {limit >> 20} MiB")
    return data


def read_text(path: str | os.PathLike, limit: int = TEXT_LIMIT, what: str = "file") -> str:
    """A bounded regular file as UTF-8 text; bytes that are not UTF-8 are an error naming the file."""
    try:
        return read_bounded(path, limit, what).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFileError(f"cannot read {what} {shown(path)}: not UTF-8 text ({error.reason} at byte "
                             f"{error.start})") from None
