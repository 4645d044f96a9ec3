"""Outputs: atomic writes and staged output folders that never replace what the tool did not write.

Every output appears under its final name only once complete (written
beside it under a temporary name, then renamed), with the permissions the
user's umask asks for. A folder of outputs is staged and published item by
item, and nothing the tool did not create is ever replaced: a target that
is, holds or lies inside an input is refused before any work starts.
Every failure a user can cause is an :class:`OutputError` with one line
naming the path and the problem.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

STAGING_PREFIX = ".superglue-ros-staging-"
# Signals that end a run; each keeps what is finished (SIGHUP: a closed terminal or SSH session).
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NAME_MAX = 255  # bytes per path component on every common Linux file system


class OutputError(Exception):
    """An output that cannot be written where asked; the message is one line for the user."""


def describe(error: OSError) -> str:
    """An OSError as a short phrase: 'No space left on device', 'Read-only file system'..."""
    return error.strerror or str(error) or type(error).__name__


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def shown(path: str | os.PathLike) -> str:
    """A path for a one-line message: newlines and other control characters escaped."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)[1:-1]


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a refusal message."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_name(path: str | os.PathLike, what: str = "write") -> Path:
    """An empty path or a component longer than the file system allows is a one-line error, not an OSError
    from deep inside the work."""
    text = os.fspath(path)
    if not text:
        raise OutputError(f"cannot {what} an empty path")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OutputError(f"cannot {what} {shown(text)}: the name {shown(part[:40])}... is longer than "
                              f"{NAME_MAX} bytes")
    return Path(text)


def check_target(target: str | os.PathLike) -> Path:
    """An output file is created or replaces a regular file, nothing else: a folder, symbolic link, device,
    FIFO or socket of that name is refused (renaming over it would destroy it)."""
    target = check_name(target)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as error:
        raise OutputError(f"cannot write {shown(target)}: {describe(error)}") from None
    if not stat.S_ISREG(mode):
        raise OutputError(f"cannot write {shown(target)}: it is {kind_of(mode)}; only a regular file is replaced")
    return target


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; renamed to ``target`` when the block succeeds,
    removed when it fails. OSErrors (full disk, read-only folder) become one-line OutputErrors."""
    target = check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name[:NAME_MAX - 40]}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as error:
        raise OutputError(f"cannot write {shown(target)}: {describe(error)}") from None
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, file_mode())
        check_target(target)  # still absent or a regular file: never rename over anything else
        os.replace(temporary, target)
    except OSError as error:
        raise OutputError(f"cannot write {shown(target)}: {describe(error)}") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def write_json(target: str | os.PathLike, document: Any) -> None:
    """Strict JSON (non-finite numbers become null: JSON has no NaN or Infinity), written atomically."""
    write_bytes(target, (json.dumps(finite(document), indent=1) + "\n").encode())


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python ones, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return finite(value.item())
    return value


def check_writable(target: str | os.PathLike) -> None:
    """Fail before the work, not after it: ``target`` must be a file this tool may write (see
    :func:`check_target`) and its folder must exist (or be creatable) and be writable."""
    target = check_target(target)
    check_folder_writable(target.parent, target)


def check_output_folder(folder: str | os.PathLike) -> Path:
    """An output folder: an existing folder (or a link to one) or one that can be created, writable."""
    folder = check_name(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write into {shown(folder)}: it is not a folder")
    check_folder_writable(folder, folder)
    return folder


def check_folder_writable(folder: Path, target: Path) -> None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {shown(target)}: {shown(folder)} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {shown(target)}: {shown(folder)} is not writable")


def check_outputs(files: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None],
                  folder: str | os.PathLike | None = None) -> None:
    """Every check an output gets before the work starts, in one call: each output file is writable and
    replaces at most a regular file, no two outputs are the same file, and none replaces, holds or goes
    inside an input (links resolved); an output ``folder`` is a writable folder outside every input."""
    if folder is not None:
        check_output_folder(folder)
    targets = [check_name(t) for t in files if t is not None]
    for target in targets:
        check_writable(target)
    if len({t.resolve() for t in targets}) < len(targets):
        raise OutputError(f"two outputs are the same file: {', '.join(map(shown, targets))}")
    refuse_inputs(targets, [i for i in inputs if i], None if folder is None else Path(folder))


def refuse_inputs(targets: Iterable[Path], inputs: Iterable[str | os.PathLike], folder: Path | None = None) -> None:
    """Inputs are never touched: an output that would replace an input, hold one (an output folder
    named like the input bag) or go inside one is refused, and so is an output ``folder`` that is an
    input or lies inside one."""
    resolved = [Path(path).resolve() for path in inputs]
    for target, replaced in [(Path(t).resolve(), True) for t in targets] + (
            [(folder.resolve(), False)] if folder is not None else []):
        for source in resolved:
            if target == source or target.is_relative_to(source) or (replaced and source.is_relative_to(target)):
                raise OutputError(f"refusing to write {shown(target)}: it would replace or go inside the input "
                                  f"{shown(source)}; choose another output")


class StagedFolder:
    """Outputs written into a hidden folder inside ``out_dir`` and renamed into place by :meth:`publish`.

    A run killed before publishing leaves its staging folder; the next run in
    the same ``out_dir`` removes those whose process is gone. An existing item
    of the wrong kind (a file where a folder goes, or the reverse) is refused
    at the start, before any work.
    """

    def __init__(self, out_dir: str | os.PathLike, items: dict[str, str]) -> None:
        """``items``: name -> "file" or "folder", the outputs this run may publish."""
        self.out_dir = Path(out_dir)
        self.items = items
        for name, kind in items.items():
            check_replaceable_item(self.out_dir / name, kind)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.out_dir)
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out_dir))
        except OSError as error:
            raise OutputError(f"cannot create output folder {self.out_dir}: {describe(error)}") from None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def publish(self, last: str) -> None:
        """Rename the staged items into place, ``last`` at the end: its presence marks a complete run."""
        try:
            (self.out_dir / last).unlink(missing_ok=True)
            for name in sorted(self.items, key=lambda item: item == last):
                source, target = self.path / name, self.out_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                if source.exists():
                    if source.is_file():
                        os.chmod(source, file_mode())
                    os.replace(source, target)
        except OSError as error:
            raise OutputError(f"cannot write into {self.out_dir}: {describe(error)}") from None

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def check_replaceable_item(existing: Path, kind: str) -> None:
    """What publishing may replace: nothing, a regular file where a file goes or a real folder (not a link to
    one) where a folder goes; checked before any work, so that a run never fails after it."""
    try:
        mode = os.lstat(existing).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise OutputError(f"cannot write {shown(existing)}: {describe(error)}") from None
    if not (stat.S_ISDIR(mode) if kind == "folder" else stat.S_ISREG(mode)):
        raise OutputError(f"cannot write {shown(existing)}: {kind_of(mode)} of that name is in the way "
                          f"(a {kind} goes there); move it or choose another --out")


def remove_stale_staging(out_dir: Path) -> None:
    """Remove staging folders left in ``out_dir`` by runs whose process no longer exists."""
    for folder in out_dir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait while the block runs (outputs being written, a training step), then
    act as they would have: a second Ctrl-C no longer loses the partial report. (Python handles signals
    in the main thread only.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {number: signal.signal(number, lambda received, frame: pending.append(received))
                for number in ENDING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if pending:
            signal.raise_signal(pending[0])
