"""Run a list of `superglue-ros` command lines in one process, each one's output to its own file.

A GPU check is many short benchmarks; starting Python, importing torch and
initialising CUDA for each would take longer than the measurements. Here
they share one process (each command still builds its own models and
resets the peak-memory counter), run in the listed order until a time
budget is spent, and a failed command does not stop the others.

    python -m superglue_ros.bench.run_list COMMANDS.txt OUT_DIR [BUDGET_SECONDS]

COMMANDS.txt holds one line per command: a name, a tab, the arguments.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
import time
from pathlib import Path

USAGE = "usage: python -m superglue_ros.bench.run_list COMMANDS.txt OUT_DIR [BUDGET_SECONDS]"


class Tee:
    """A text stream writing to several others (the console and a command's file)."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


def read_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(name, arguments) of each non-empty line of a COMMANDS file."""
    commands = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, _, arguments = line.partition("\t")
            commands.append((name.strip(), shlex.split(arguments)))
    return commands


def run_commands(commands: list[tuple[str, list[str]]], out_dir: Path, budget_seconds: float) -> list[str]:
    """Each command with stdout and stderr to the console and OUT_DIR/NAME.txt; one summary line each."""
    from .main import main

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    summary = []
    for name, arguments in commands:
        if time.monotonic() - start > budget_seconds:
            summary.append(f"{name}: skipped, the {budget_seconds:.0f} s budget is spent")
            continue
        began = time.monotonic()
        print(f"== {name}: superglue-ros {shlex.join(arguments)}", flush=True)
        with open(out_dir / f"{name}.txt", "w") as log, contextlib.redirect_stdout(Tee(sys.__stdout__, log)), \
                contextlib.redirect_stderr(Tee(sys.__stderr__, log)):
            try:
                code = main(arguments)
            except Exception as error:  # one command's crash is reported, the others still run
                print(f"{type(error).__name__}: {error}", file=sys.stderr)
                code = 1
        summary.append(f"{name}: exit {code}, {time.monotonic() - began:.1f} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print(USAGE, file=sys.stderr)
        return 2
    summary = run_commands(read_commands(Path(argv[0])), Path(argv[1]), float(argv[2]) if len(argv) == 3 else 280)
    (Path(argv[1]) / "summary.txt").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0 if all(": exit 0," in line for line in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
