"""Reading images from rosbag2 (sqlite3, mcap) and ROS 1 bags; writing our messages with definitions embedded.

Bags are built here with rosbags' writers from real images (the Oxford
graffiti pair of Debian's opencv-doc), so no recording has to be shipped.
``write_image_bag`` is also used by test_eval.py.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from superglue_ros.eval.bagio import BagError, build_message, open_bag
from superglue_ros.stream.image_codec import ImageDecodeError, decode_raw
from superglue_ros.stream.messages import Stamp, msg_definitions

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000


def opencv_image(name: str) -> np.ndarray:
    path = OPENCV_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (install Debian's opencv-doc package)")
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def graffiti_frames(count: int, size: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    """``count`` BGR frames: graf1 under growing small shifts, so neighbours overlap like a slow pan."""
    base = cv2.resize(opencv_image("graf1.png"), size, interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
        shift = np.float64([[1, 0, 3 * i], [0, 1, 2 * i]])
        frames.append(cv2.warpAffine(base, shift, size, borderMode=cv2.BORDER_REFLECT))
    return frames


def image_message(typestore, image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "cam"):
    stamp = Stamp.from_nanoseconds(stamp_ns, frame_id)
    pixels = np.ascontiguousarray(image)
    height, width = pixels.shape[:2]
    ros1_header = "seq" in dict(typestore.fielddefs["std_msgs/msg/Header"][1])
    header = stamp.header() | ({"seq": 0} if ros1_header else {})
    return build_message(typestore, "sensor_msgs/msg/Image", {
        "header": header, "height": height, "width": width, "encoding": encoding, "is_bigendian": 0,
        "step": pixels.strides[0], "data": pixels.reshape(-1).view(np.uint8)})


def compressed_message(typestore, image: np.ndarray, stamp_ns: int):
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    stamp = Stamp.from_nanoseconds(stamp_ns, "cam")
    return build_message(typestore, "sensor_msgs/msg/CompressedImage",
                         {"header": stamp.header(), "format": "png", "data": encoded.reshape(-1)})


def write_image_bag(path: Path, topics: dict[str, list[np.ndarray]], storage: str = "sqlite3",
                    encoding: str = "bgr8", compressed: bool = False,
                    stamps: dict[str, list[int]] | None = None) -> Path:
    """A rosbag2 (sqlite3/mcap) or, for storage="ros1", a ROS 1 .bag with image topics."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    if storage == "ros1":
        return _write_ros1(path, topics, encoding)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        for topic, images in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=typestore)
            for i, image in enumerate(images):
                stamp = stamps[topic][i] if stamps else START_NS + i * PERIOD_NS
                message = (compressed_message(typestore, image, stamp) if compressed
                           else image_message(typestore, image, encoding, stamp))
                writer.write(connection, stamp, typestore.serialize_cdr(message, msgtype))
    return path


def _write_ros1(path: Path, topics: dict[str, list[np.ndarray]], encoding: str) -> Path:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS1_NOETIC)
    msgtype = "sensor_msgs/msg/Image"
    with Writer(path) as writer:
        for topic, images in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=typestore)
            for i, image in enumerate(images):
                stamp = START_NS + i * PERIOD_NS
                message = image_message(typestore, image, encoding, stamp)
                writer.write(connection, stamp, typestore.serialize_ros1(message, msgtype))
    return path


@pytest.mark.parametrize("storage", ["sqlite3", "mcap", "ros1"])
def test_reads_real_frames_back_exactly(tmp_path: Path, storage: str) -> None:
    frames = graffiti_frames(3)
    name = "cam.bag" if storage == "ros1" else "cam"
    bag_path = write_image_bag(tmp_path / name, {"/cam/image_raw": frames}, storage)
    with open_bag(bag_path) as bag:
        assert bag.image_topics() == {"/cam/image_raw": "sensor_msgs/msg/Image"}
        decoded = [bag.decode(raw) for raw in bag.raw_frames(["/cam/image_raw"])]
    assert [f.index for f in decoded] == [0, 1, 2]
    for i, (frame, original) in enumerate(zip(decoded, frames)):
        np.testing.assert_array_equal(frame.image, original)
        assert frame.stamp == Stamp.from_nanoseconds(START_NS + i * PERIOD_NS, "cam")


def test_reads_compressed_images(tmp_path: Path) -> None:
    frames = graffiti_frames(2)
    bag_path = write_image_bag(tmp_path / "bag", {"/cam/compressed": frames}, "mcap", compressed=True)
    with open_bag(bag_path) as bag:
        assert bag.image_topics() == {"/cam/compressed": "sensor_msgs/msg/CompressedImage"}
        decoded = [bag.decode(raw).image for raw in bag.raw_frames(["/cam/compressed"])]
    for image, original in zip(decoded, frames):
        np.testing.assert_array_equal(image, original)  # PNG is lossless


@pytest.mark.parametrize("encoding", ["mono8", "8UC1", "mono16", "16UC1", "bgr8", "rgb8", "bgra8", "rgba8"])
def test_raw_encodings_decode_to_bgr_order(encoding: str) -> None:
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    conversions = {"rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA, "rgba8": cv2.COLOR_BGR2RGBA}
    if encoding in ("mono8", "8UC1"):
        pixels, expected = bgr[:, :, 0], bgr[:, :, 0]
    elif encoding in ("mono16", "16UC1"):
        pixels = expected = bgr[:, :, 0].astype(np.uint16) * 257
    elif encoding == "bgr8":
        pixels = expected = bgr
    else:
        pixels = cv2.cvtColor(bgr, conversions[encoding])
        expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA) if encoding != "rgb8" else bgr
    row = pixels.reshape(5, -1).view(np.uint8)
    padded = np.concatenate([row, np.zeros((5, 3), np.uint8)], axis=1)  # step > row bytes
    image = decode_raw(padded.reshape(-1), encoding, 5, 7, padded.shape[1])
    np.testing.assert_array_equal(image, expected)


def test_big_endian_mono16() -> None:
    values = np.array([[1, 256, 65535]], dtype=">u2")
    image = decode_raw(values.view(np.uint8).reshape(-1), "mono16", 1, 3, 6, big_endian=True)
    np.testing.assert_array_equal(image, [[1, 256, 65535]])


def test_unsupported_encoding_and_short_buffer_are_one_line_errors() -> None:
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'bayer_rggb8' on /cam.*supported: mono8"):
        decode_raw(np.zeros(12, np.uint8), "bayer_rggb8", 3, 4, 4, topic="/cam")
    with pytest.raises(ImageDecodeError, match="malformed"):
        decode_raw(np.zeros(10, np.uint8), "mono8", 3, 4, 4)


def test_unknown_topic_lists_image_topics(tmp_path: Path) -> None:
    bag_path = write_image_bag(tmp_path / "bag", {"/left/image": graffiti_frames(1), "/right/image":
                                                  graffiti_frames(1)})
    with open_bag(bag_path) as bag, pytest.raises(BagError) as error:
        bag.check_image_topic("/nope")
    assert str(error.value) == (f"topic /nope is not in the bag; image topics in {bag_path}: "
                                "/left/image (Image), /right/image (Image)")


def test_missing_and_broken_bags(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such file"):
        with open_bag(tmp_path / "absent"):
            pass
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        with open_bag(tmp_path / "empty"):
            pass
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"not a bag at all")
    with pytest.raises(BagError, match="cannot read bag"):
        with open_bag(garbage):
            pass


def test_output_bag_embeds_definitions_and_round_trips(tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from superglue_ros.eval.bagio import OutputBag

    fields = {
        "header": Stamp(5, 6, "cam").header(), "reference_header": Stamp(4, 9, "cam").header(),
        "h": np.arange(9, dtype=np.float64), "valid": True, "reason": "", "num_inliers": 7, "num_matches": 9,
        "reprojection_threshold": 3.0}
    for storage in ("sqlite3", "mcap"):
        out = OutputBag(tmp_path / storage, storage)
        out.write("/superglue/homography", "superglue_ros/msg/Homography", fields, 5_000_000_006)
        out.close()
        # A reader with an empty default typestore can only decode through the embedded definitions.
        with AnyReader([tmp_path / storage]) as reader:
            connection = reader.connections[0]
            assert connection.msgtype == "superglue_ros/msg/Homography"
            assert "float64[9] h" in connection.msgdef.data
            (_, timestamp, data), = list(reader.messages())
            message = reader.deserialize(data, connection.msgtype)
        assert timestamp == 5_000_000_006
        assert (message.header.stamp.sec, message.header.stamp.nanosec, message.header.frame_id) == (5, 6, "cam")
        assert message.reference_header.stamp.nanosec == 9
        np.testing.assert_array_equal(message.h, np.arange(9))
        assert (message.valid, message.num_inliers, message.num_matches) == (True, 7, 9)


def test_build_message_reports_missing_fields() -> None:
    from superglue_ros.eval.bagio import typestore_with_package_messages

    typestore = typestore_with_package_messages()
    assert set(msg_definitions()) <= set(typestore.fielddefs)
    with pytest.raises(ValueError, match="needs field 'valid'"):
        build_message(typestore, "superglue_ros/msg/Homography", {"header": Stamp(0, 0).header(),
                                                                  "reference_header": Stamp(0, 0).header(),
                                                                  "h": np.zeros(9)})
