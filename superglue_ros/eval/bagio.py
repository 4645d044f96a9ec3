"""Read camera images from recorded bags and write our messages into a new bag, without ROS.

Everything goes through the pure-Python ``rosbags`` library, so evaluation
runs on a laptop with no ROS install: rosbag2 folders (sqlite3 and mcap
storage) and ROS 1 ``.bag`` files are read with ``AnyReader``; the output is
a rosbag2 whose connections carry the full ``Matches``/``Homography``
definitions, so tools that have never seen this package can decode it.
Every failure a user can cause (bad path, damaged bag, wrong topic, odd
encoding) is raised as :class:`BagError` with a one-line message.
"""
from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..stream.image_codec import COMPRESSED_IMAGE, RAW_IMAGE, ImageDecodeError, decode_image
from ..stream.messages import Stamp, msg_definitions
from ..files.images import IMAGE_SUFFIXES, ImageReadError, image_files, read_image
from ..files.outputs import OutputError

IMAGE_TYPES = (RAW_IMAGE, COMPRESSED_IMAGE)
STORAGES = ("sqlite3", "mcap")


class BagError(Exception):
    """A bag that cannot be used as asked; the message is one line for the user."""


class FrameError(BagError):
    """One message that cannot be decoded into an image; the run may skip it. ``reason`` names the
    kind of problem, to count skipped frames by."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RawFrame:
    """One image message, still serialised: decoding is deferred so skipped frames cost nothing."""

    index: int
    topic: str
    msgtype: str
    log_time: int
    data: bytes


@dataclass(frozen=True)
class ImageFrame:
    """A decoded image (BGR/BGRA order for colour) with the stamp its camera driver set; ``name`` is the
    file of an image-folder frame (relative to the folder), empty for bag messages."""

    index: int
    topic: str
    log_time: int
    stamp: Stamp
    image: np.ndarray
    name: str = ""


def _reader_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error

    errors: tuple[type[BaseException], ...] = (AnyReaderError, Reader1Error, Reader2Error, sqlite3.Error, OSError,
                                               ValueError, KeyError, EOFError, IndexError, struct.error)
    try:  # rosbags 0.11 reads sqlite3 storage through apsw
        import apsw

        errors += (apsw.Error,)
    except ImportError:
        pass
    return errors


class Bag:
    """An open input bag: topic listing, image streams and deserialisation with clean errors."""

    def __init__(self, reader: Any, path: Path) -> None:
        self.reader = reader
        self.path = path

    def topics(self) -> dict[str, str]:
        """``{topic: message type}`` of every connection in the bag."""
        return {name: info.msgtype or "?" for name, info in self.reader.topics.items()}

    def image_topics(self) -> dict[str, str]:
        """``{topic: message type}`` of the raw and compressed image topics."""
        return {name: kind for name, kind in self.topics().items() if kind in IMAGE_TYPES}

    def count(self, topic: str) -> int:
        """Messages on ``topic``: the metadata's count, or, where it has none (a bag whose metadata.yaml
        was rewritten or lost its counts), the messages in storage, counted without decoding them."""
        listed = int(self.reader.topics[topic].msgcount)
        return listed if listed > 1 else sum(1 for _ in self.raw_frames([topic]))

    def check_image_topic(self, topic: str) -> str:
        """The topic's message type; unknown or non-image topics list what the bag does have."""
        images = self.image_topics()
        if topic in images:
            return images[topic]
        available = ", ".join(f"{name} ({kind.rsplit('/', 1)[-1]})" for name, kind in sorted(images.items()))
        known = self.topics()
        what = f"is {known[topic]}, not an image" if topic in known else "is not in the bag"
        raise BagError(f"topic {topic} {what}; image topics in {self.path}: {available or 'none'}")

    def raw_frames(self, topics: list[str]) -> Iterator[RawFrame]:
        """Serialised image messages of ``topics`` in recording order, numbered per topic."""
        connections = [c for c in self.reader.connections if c.topic in topics]
        counters = dict.fromkeys(topics, 0)
        try:
            for connection, log_time, data in self.reader.messages(connections=connections):
                index = counters[connection.topic]
                counters[connection.topic] += 1
                yield RawFrame(index, connection.topic, connection.msgtype, int(log_time), bytes(data))
        except _reader_errors() as error:
            raise BagError(f"cannot read {self.path}: {_one_line(error)}") from None

    def decode(self, raw: RawFrame, max_pixels: int | None = None) -> ImageFrame:
        """Deserialise one image message and turn it into a numpy image (FrameError when it cannot be)."""
        try:
            message = self.reader.deserialize(raw.data, raw.msgtype)
        except _reader_errors() as error:
            raise FrameError(f"cannot deserialise message {raw.index} on {raw.topic}: {_one_line(error)}",
                             "not deserialisable") from None
        stamp = Stamp.from_header(message.header)
        try:
            image = decode_image(message, raw.msgtype, raw.topic, max_pixels)
        except ImageDecodeError as error:
            raise FrameError(f"message {raw.index} on {raw.topic}: {error}", error.reason) from None
        return ImageFrame(raw.index, raw.topic, raw.log_time, stamp, image)

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        try:
            return self.reader.deserialize(data, msgtype)
        except _reader_errors() as error:
            raise BagError(f"cannot decode a {msgtype} message: {_one_line(error)}") from None

    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        """(log time, deserialised message) of any topic, for poses and camera info."""
        connections = [c for c in self.reader.connections if c.topic == topic]
        try:
            for connection, log_time, data in self.reader.messages(connections=connections):
                yield int(log_time), self.deserialize(bytes(data), connection.msgtype)
        except _reader_errors() as error:
            raise BagError(f"cannot read {self.path}: {_one_line(error)}") from None


@contextmanager
def open_bag(path: str | Path) -> Iterator[Bag | ImageFolder]:
    """Open a rosbag2 folder (or its .db3/.mcap file) or a ROS 1 .bag, as a :class:`Bag`;
    a folder of images (no metadata.yaml) as an :class:`ImageFolder`."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if is_image_folder(path):
        yield ImageFolder(Path(path))
        return
    bag_path = _bag_root(Path(path))
    try:
        reader = AnyReader([bag_path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except FileNotFoundError:
        raise BagError(f"cannot read bag {path}: no such file or folder") from None
    except _reader_errors() as error:
        raise BagError(f"cannot read bag {path}: {_one_line(error)}") from None
    try:
        yield Bag(reader, bag_path)
    finally:
        reader.close()


IMAGE_FOLDER_TOPIC = "images"
IMAGE_FILE = "image file"


def is_image_folder(path: str | Path) -> bool:
    """A folder of image files rather than a rosbag2 recording (which has metadata.yaml)."""
    path = Path(path)
    return (path.is_dir() and not (path / "metadata.yaml").is_file()
            and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()))


class ImageFolder:
    """A folder of images read like a bag with one image topic, ``images``, in file-name order.

    Lets the evaluation (above all its synthetic homography benchmark) run
    on plain photographs. Frame i is stamped i seconds; there are no other
    topics, so ground-truth poses and stereo pairing are unavailable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = image_files(path)

    def topics(self) -> dict[str, str]:
        return {IMAGE_FOLDER_TOPIC: IMAGE_FILE}

    def image_topics(self) -> dict[str, str]:
        return self.topics()

    def count(self, topic: str) -> int:
        return len(self.files) if topic == IMAGE_FOLDER_TOPIC else 0

    def check_image_topic(self, topic: str) -> str:
        if topic != IMAGE_FOLDER_TOPIC:
            raise BagError(f"topic {topic} is not in {self.path}: a folder of images has only {IMAGE_FOLDER_TOPIC}")
        return IMAGE_FILE

    def raw_frames(self, topics: list[str]) -> Iterator[RawFrame]:
        if IMAGE_FOLDER_TOPIC in topics:
            for index, path in enumerate(self.files):
                yield RawFrame(index, IMAGE_FOLDER_TOPIC, IMAGE_FILE, index * 1_000_000_000, str(path).encode())

    def decode(self, raw: RawFrame, max_pixels: int | None = None) -> ImageFrame:
        try:
            image = read_image(raw.data.decode(), max_pixels)
        except ImageReadError as error:
            raise FrameError(str(error), error.reason) from None
        name = Path(raw.data.decode()).relative_to(self.path).as_posix()
        return ImageFrame(raw.index, raw.topic, raw.log_time, Stamp(raw.index, 0, ""), image, name)

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        raise BagError(f"{self.path} is a folder of images: it has no {msgtype} messages")

    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        raise BagError(f"{self.path} is a folder of images: it has no topic {topic}")


def _bag_root(path: Path) -> Path:
    """rosbag2 is a folder with metadata.yaml; users often point at the storage file inside it."""
    if path.suffix in (".db3", ".mcap") and (path.parent / "metadata.yaml").is_file():
        return path.parent
    if not path.exists():
        raise BagError(f"cannot read bag {path}: no such file or folder")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"cannot read bag {path}: folder has no metadata.yaml (not a rosbag2 recording) "
                       "and no images")
    if path.is_file() and path.suffix != ".bag":
        raise BagError(f"cannot read bag {path}: expected a rosbag2 folder or a ROS 1 .bag file")
    return path


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def typestore_with_package_messages() -> Any:
    """ROS 2 Humble types plus this package's messages, parsed from the .msg files we ship."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    for name, text in msg_definitions().items():
        typestore.register(get_types_from_msg(text, name))
    return typestore


def build_message(typestore: Any, msgtype: str, fields: dict[str, Any]) -> Any:
    """Message object from a dict keyed by field names, nested dicts becoming nested messages.

    Driven by the typestore's field definitions, so any message the typestore
    knows (ours, std_msgs/Header, builtin_interfaces/Time) is built the same way.
    """
    from rosbags.interfaces import Nodetype

    _, definitions = typestore.fielddefs[msgtype]
    values = {}
    for name, (node, detail) in definitions:
        if name not in fields:
            raise ValueError(f"{msgtype} needs field {name!r}")
        value = fields[name]
        values[name] = build_message(typestore, detail, value) if node == Nodetype.NAME else value
    return typestore.types[msgtype](**values)


class OutputBag:
    """A rosbag2 being written with messages of registered types, definitions embedded."""

    def __init__(self, path: str | Path, storage: str = "sqlite3") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.typestore = typestore_with_package_messages()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.path = Path(path)
        self.writer = Writer(self.path, version=8, storage_plugin=plugin)
        self.connections: dict[str, Any] = {}
        with self.failures():
            self.writer.open()

    @contextmanager
    def failures(self) -> Iterator[None]:
        """A full disk, a quota or a read-only folder as one line ("database or disk is full" from sqlite)."""
        try:
            yield
        except (OSError, sqlite3.Error) as error:
            raise OutputError(f"cannot write {self.path.name}: {error}") from None

    def write(self, topic: str, msgtype: str, fields: dict[str, Any], timestamp: int) -> None:
        """Serialise ``fields`` as ``msgtype`` on ``topic`` at ``timestamp`` (ns)."""
        message = build_message(self.typestore, msgtype, fields)
        with self.failures():
            if topic not in self.connections:
                self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.writer.write(self.connections[topic], timestamp, self.typestore.serialize_cdr(message, msgtype))

    def close(self) -> None:
        with self.failures():
            self.writer.close()
