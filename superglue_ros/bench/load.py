"""Competing CPU load for a benchmark: a robot's CPU is never quiet.

Each load process is a pure-Python busy loop in its own session (so a
Ctrl-C at the terminal reaches only the benchmark, which stops them), and
each checks between short bursts that its parent is still the benchmark,
so none outlives it even when the benchmark is killed outright.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    sum(i * i for i in range(50000))
"""


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[list[subprocess.Popen]]:
    """``processes`` CPU-bound processes running for the duration of the block, stopped however it ends."""
    children: list[subprocess.Popen] = []
    try:
        for _ in range(processes):
            children.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(os.getpid())],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL, start_new_session=True))
        yield children
    finally:
        stop(children)


def stop(children: list[subprocess.Popen]) -> None:
    """Terminate, then kill what has not exited within a few seconds; every child is reaped."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
