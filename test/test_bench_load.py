"""The competing load of `bench --cpu-load` runs while asked and never outlives the benchmark."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from superglue_ros.bench.load import cpu_load


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def test_load_processes_run_busy_and_are_stopped_after_the_block():
    with cpu_load(2) as children:
        assert len(children) == 2
        time.sleep(1.0)
        assert all(child.poll() is None for child in children)
        if Path("/proc").is_dir():
            assert all(cpu_seconds(child.pid) > 0.05 for child in children)  # busy, not sleeping
    assert all(child.returncode is not None for child in children)


def test_load_processes_are_stopped_on_ctrl_c():
    with pytest.raises(KeyboardInterrupt):
        with cpu_load(1) as children:
            raise KeyboardInterrupt
    assert children[0].returncode is not None


def test_no_load_spawns_nothing():
    with cpu_load(0) as children:
        assert children == []
