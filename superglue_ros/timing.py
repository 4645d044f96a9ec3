"""Wall-clock stage timing that stays honest on asynchronous devices."""
from __future__ import annotations

import time
from types import TracebackType

import torch


class StageClock:
    """``with StageClock(timings, "stage", device):`` adds the block's seconds to timings["stage"].

    On CUDA the device is synchronised at both ends, otherwise the time of
    queued kernels would be charged to whichever stage happens to wait.
    With ``timings=None`` it does nothing at all (no clock, no synchronisation).
    """

    def __init__(self, timings: dict[str, float] | None, stage: str, device: torch.device | None = None) -> None:
        self.timings = timings
        self.stage = stage
        self.cuda = timings is not None and device is not None and device.type == "cuda"
        self.start = 0.0

    def __enter__(self) -> "StageClock":
        if self.cuda:
            torch.cuda.synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.timings is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + time.perf_counter() - self.start
