"""Where an evaluation's pairs come from: consecutive frames, stereo cameras, synthetic warps, pair lists.

Frames are streamed from the bag and decoded only when a pair needs them,
so an hour-long recording evaluated with ``--stride``/``--max-pairs`` costs
what the selected pairs cost. A frame that cannot be decoded is skipped and
counted by reason (:class:`FrameTally`), and the run goes on; so is a stereo
pair whose images differ in size, which the node rejects too.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from ..data.homographies import sample_homography, warp_image
from ..inference.preprocess import resize_gray, resized_shape, to_gray_float
from ..stream.messages import Stamp
from ..stream.pairing import ApproximateSync, StampedFrame
from .bagio import Bag, FrameError, ImageFrame, RawFrame
from .config import EvalConfig, EvalError
from .pairlist import PairListSource, PoseTruth

STEREO_QUEUE_SIZE = 64  # frames per camera awaiting a partner: bags may record one camera in bursts
EXAMPLES_KEPT = 5


@dataclass
class FramePair:
    """Two decoded frames to match; ``h_true`` is set for synthetic pairs, ``truth`` for pair lists."""

    frame0: ImageFrame
    frame1: ImageFrame
    decode_s: float
    h_true: np.ndarray | None = None
    truth: PoseTruth | None = None


@dataclass
class FrameTally:
    """What the sources saw beside the pairs they formed: frames per camera (stereo), and frames skipped.

    Frames a ``stride`` skips on the first camera are never read; the second
    camera's frames that would have paired with them count as unpaired.
    """

    read: list[int] = field(default_factory=lambda: [0, 0])
    paired: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_bad_frames: int | None = None

    def unpaired(self, topics: tuple[str, str]) -> dict[str, int]:
        return {topic: read - self.paired for topic, read in zip(topics, self.read)}

    def skip(self, reason: str, message: str) -> None:
        """Count a skipped frame or pair; past ``max_bad_frames`` the run fails."""
        self.skipped[reason] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(message)
        total = sum(self.skipped.values())
        if self.max_bad_frames is not None and total > self.max_bad_frames:
            raise EvalError(f"{total} bad frames, more than --max-bad-frames {self.max_bad_frames}; the last: "
                            f"{message}")

    def skipped_summary(self) -> dict[str, object]:
        return {"total": sum(self.skipped.values()), "by_reason": dict(self.skipped), "examples": list(self.examples)}


class Decoder:
    """Decodes raw frames, skipping (and counting) bad ones, and keeps the time spent so that it can
    be charged to the pair that needed it."""

    def __init__(self, bag: Bag, tally: FrameTally, max_pixels: int | None) -> None:
        self.bag, self.tally, self.max_pixels = bag, tally, max_pixels
        self.seconds = 0.0

    def __call__(self, raw: RawFrame) -> ImageFrame | None:
        start = time.perf_counter()
        try:
            return self.bag.decode(raw, self.max_pixels)
        except FrameError as error:
            self.tally.skip(error.reason, str(error))
            return None
        finally:
            self.seconds += time.perf_counter() - start

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def expected_pairs(frame_count: int, config: EvalConfig) -> int:
    """How many pairs the configuration yields from ``frame_count`` frames of the first topic (or pair lines)."""
    if config.pair_list:
        count = frame_count
    else:
        used = math.ceil(frame_count / config.stride)
        count = used * config.warps if config.synthetic or config.mode == "stereo" else max(used - 1, 0)
    return count if config.max_pairs is None else min(count, config.max_pairs)


def selected_frames(bag: Bag, config: EvalConfig, decode: Decoder) -> Iterator[ImageFrame]:
    """Every ``stride``-th frame of the topic that decodes (the others are skipped and counted)."""
    for raw in bag.raw_frames([config.topic]):
        if raw.index % config.stride:
            continue
        frame = decode(raw)
        if frame is not None:
            yield frame


def sequential_pairs(bag: Bag, config: EvalConfig, decode: Decoder) -> Iterator[FramePair]:
    """Every ``stride``-th frame matched against the previous selected one (reference = older)."""
    previous: ImageFrame | None = None
    for frame in selected_frames(bag, config, decode):
        if previous is not None:
            yield FramePair(previous, frame, decode.take())
        previous = frame


def synthetic_pairs(bag: Bag, config: EvalConfig, decode: Decoder,
                    resize: int | tuple[int, int] | None = None) -> Iterator[FramePair]:
    """Every ``stride``-th frame (as 8-bit gray) against ``warps`` random warps of itself.

    Frames are first scaled as the matcher's ``resize`` would scale them, so
    the benchmark's pixel thresholds (3 px correct, 5 px wrong, AUC) are
    pixels the network sees, whatever the size of the source images. Warp k
    of frame i is seeded by (seed, i, k), with k left out for the first warp
    so that one-warp runs keep their pairs.
    """
    for frame in selected_frames(bag, config, decode):
        gray = np.rint(to_gray_float(frame.image) * 255.0).astype(np.uint8)
        gray = resize_gray(gray, resized_shape(gray.shape[0], gray.shape[1], resize))
        reference = ImageFrame(frame.index, frame.topic, frame.log_time, frame.stamp, gray, frame.name)
        for k in range(config.warps):
            rng = np.random.default_rng([config.seed, frame.index, *([k] if k else [])])
            h = sample_homography(rng, gray.shape[0], gray.shape[1], config.strength)
            warped = warp_image(gray, h, rng, photometric=config.photometric)
            current = ImageFrame(frame.index, f"{frame.topic} (warped)", frame.log_time, frame.stamp, warped,
                                 f"{frame.name} (warped)" if frame.name else "")
            yield FramePair(reference, current, decode.take(), h)


def stereo_pairs(bag: Bag, config: EvalConfig, decode: Decoder) -> Iterator[FramePair]:
    """Left frames (every ``stride``-th) paired with right frames by header stamp, the way the node pairs them.

    Using the node's own ``ApproximateSync`` (slop = ``config.slop``) means an
    evaluation over a recorded bag scores the pairs a running node would
    have matched. Frames are only decoded once paired.
    """
    sync = ApproximateSync(config.slop, STEREO_QUEUE_SIZE)
    tally = decode.tally
    for raw in bag.raw_frames([config.topic, config.topic1]):
        side = 0 if raw.topic == config.topic else 1
        if side == 0 and raw.index % config.stride:
            continue
        tally.read[side] += 1
        try:
            stamp = header_stamp(bag, raw)
        except FrameError as error:
            tally.skip(error.reason, str(error))
            continue
        pair, _ = sync.add(side, StampedFrame(stamp, raw, 0.0))
        if pair is None:
            continue
        tally.paired += 1
        frames = [decode(pair[0].message), decode(pair[1].message)]
        if frames[0] is None or frames[1] is None:
            continue
        if frames[0].image.shape[:2] != frames[1].image.shape[:2]:
            shapes = " vs ".join(f"{f.image.shape[1]}x{f.image.shape[0]}" for f in frames)
            tally.skip("different sizes", f"stereo pair {frames[0].index}/{frames[1].index} differs in size: {shapes}")
            continue
        yield FramePair(frames[0], frames[1], decode.take())


def header_stamp(bag: Bag, raw: RawFrame) -> int:
    """Header stamp [ns] of a serialised image (deserialising is cheap next to decoding pixels)."""
    try:
        return Stamp.from_header(bag.deserialize(raw.data, raw.msgtype).header).nanoseconds
    except FrameError:
        raise
    except Exception as error:  # a message without a usable header
        raise FrameError(f"message {raw.index} on {raw.topic} has no header stamp ({error})", "no stamp") from None


def frame_pairs(source: Bag | PairListSource, config: EvalConfig, tally: FrameTally, max_pixels: int | None = None,
                resize: int | tuple[int, int] | None = None) -> Iterator[FramePair]:
    """The pairs the configuration asks for, stopping at ``max_pairs``; ``resize`` is the matcher's
    (synthetic pairs are scaled by it), ``tally`` receives what was skipped."""
    if isinstance(source, PairListSource):
        return islice(pair_list_pairs(source, tally, max_pixels), config.max_pairs)
    decode = Decoder(source, tally, max_pixels)
    if config.synthetic:
        pairs = synthetic_pairs(source, config, decode, resize)
    elif config.mode == "stereo":
        pairs = stereo_pairs(source, config, decode)
    else:
        pairs = sequential_pairs(source, config, decode)
    return islice(pairs, config.max_pairs)


def pair_list_pairs(source: PairListSource, tally: FrameTally, max_pixels: int | None) -> Iterator[FramePair]:
    """The listed pairs, read, resized and rotated as the reference does; unreadable ones skipped."""
    for index, entry in enumerate(source.entries):
        start = time.perf_counter()
        try:
            images, truth = source.load(entry, max_pixels)
        except FrameError as error:
            tally.skip(error.reason, f"pair {index} ({entry.name0} {entry.name1}): {error}")
            continue
        frames = [ImageFrame(index, name, index * 1_000_000_000, Stamp(index, 0, ""), image)
                  for name, image in zip((entry.name0, entry.name1), images)]
        yield FramePair(frames[0], frames[1], time.perf_counter() - start, truth=truth)
