"""Which frames get matched with which: stereo time sync, latest-frame hand-off, keyframes.

Plain Python (no ROS), shared by the node and its tests. Frames are opaque
payloads with a stamp in nanoseconds; everything that is thrown away is
counted by the caller through the returned values, never silently lost.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StampedFrame:
    """One received image message and when it arrived (monotonic seconds)."""

    stamp_ns: int
    message: Any
    received: float
    frame_id: str = ""
    topic: str = ""


class ApproximateSync:
    """Pairs frames of two cameras whose stamps differ by at most ``slop`` seconds.

    Like message_filters' ApproximateTime policy for two inputs, simplified: a
    new frame is paired with the closest-stamped waiting frame of the other
    camera if that is within slop; frames older than a formed pair can no
    longer pair with anything and are discarded, as are frames pushed out of a
    full queue. ``add`` returns the pair (or None) and how many frames it discarded.
    """

    def __init__(self, slop: float, queue_size: int) -> None:
        self.set_slop(slop)
        self.queues: tuple[deque[StampedFrame], deque[StampedFrame]] = (deque(), deque())
        self.queue_size = queue_size

    def add(self, side: int, frame: StampedFrame) -> tuple[tuple[StampedFrame, StampedFrame] | None, int]:
        own, other = self.queues[side], self.queues[1 - side]
        if other:
            partner = min(other, key=lambda waiting: abs(waiting.stamp_ns - frame.stamp_ns))
            if abs(partner.stamp_ns - frame.stamp_ns) <= self.slop_ns:
                discarded = self._discard_up_to(partner.stamp_ns, frame.stamp_ns)
                other.remove(partner)
                pair = (frame, partner) if side == 0 else (partner, frame)
                return pair, discarded
        own.append(frame)
        discarded = 0
        while len(own) > self.queue_size:
            own.popleft()
            discarded += 1
        return None, discarded

    def set_slop(self, slop: float) -> None:
        self.slop_ns = int(slop * 1e9)

    def _discard_up_to(self, partner_ns: int, frame_ns: int) -> int:
        """Drop waiting frames stamped before the new pair: nothing later can pair with them."""
        limit = min(partner_ns, frame_ns)
        discarded = 0
        for queue in self.queues:
            while queue and queue[0].stamp_ns < limit:
                queue.popleft()
                discarded += 1
        return discarded


class LatestSlots(Generic[T]):
    """A mailbox between the subscription callbacks and the inference worker, one slot per camera.

    ``put`` replaces the job a camera's slot still holds and returns the job it
    replaced (None if the slot was empty), so that when inference is slower
    than the cameras the worker always gets each camera's newest frame: no
    queue grows, latency stays bounded, and every replaced job is a counted drop. ``take`` hands over
    every pending job at once, so the cameras ready together are matched as
    one batch.
    """

    def __init__(self) -> None:
        self._items: dict[Any, T] = {}
        self._closed = False
        self._condition = threading.Condition()

    def put(self, key: Any, item: T) -> T | None:
        with self._condition:
            replaced = self._items.get(key)
            self._items[key] = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> list[T]:
        """The pending jobs (oldest camera first), waiting up to ``timeout``; [] on timeout or after :meth:`close`."""
        with self._condition:
            self._condition.wait_for(lambda: self._items or self._closed, timeout)
            items, self._items = list(self._items.values()), {}
            return items

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
