"""The .msg files are the one definition of our messages: ROS 2's own tools and rosbags must accept them,
and the field builders must produce exactly their fields."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from superglue_ros.models.types import Features, MatchResult
from superglue_ros.geometry.homography import estimate_homography
from superglue_ros.inference.matcher import PairMatch
from superglue_ros.stream.messages import (Stamp, homography_fields, matches_fields, msg_definitions,
                                           relative_pose_fields)

from conftest import REPO

SYSTEM_PYTHON = "/usr/bin/python3"
ROSIDL_CHECK = """
import json, sys
from pathlib import Path
from rosidl_adapter.msg import convert_msg_to_idl
from rosidl_parser.parser import parse_idl_file
from rosidl_parser.definition import IdlLocator, Message
package_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
fields = {}
for msg in sorted((package_dir / "msg").glob("*.msg")):
    idl = convert_msg_to_idl(package_dir, "superglue_ros", msg.relative_to(package_dir), out_dir / "msg")
    content = parse_idl_file(IdlLocator(out_dir, Path(idl).relative_to(out_dir))).content
    message = content.get_elements_of_type(Message)[0]
    fields[msg.stem] = [member.name for member in message.structure.members]
open(out_dir / "fields.json", "w").write(json.dumps(fields))
"""


def has_rosidl() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import rosidl_adapter, rosidl_parser"],
                          capture_output=True).returncode == 0


def example_pair() -> PairMatch:
    f0 = Features(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([0.5, 0.6]), torch.zeros(2, 4), (10, 20))
    f1 = Features(torch.tensor([[5.0, 6.0]]), torch.tensor([0.7]), torch.zeros(1, 4), (12, 22))
    result = MatchResult(torch.tensor([-1, 0]), torch.tensor([1]), torch.tensor([0.0, 0.9]), torch.tensor([0.9]),
                         torch.zeros(3, 2))
    return PairMatch(f0, f1, result)


def message_fields(text: str) -> list[str]:
    """Field names of a .msg text, in order (constants, which carry '=', are not fields)."""
    names = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2 and "=" not in parts[1]:
            names.append(parts[1])
    return names


@pytest.mark.skipif(not has_rosidl(), reason="ROS 2's rosidl tools are absent (apt-get install python3-rosidl "
                                             "python3-empy python3-lark)")
def test_ros2_interface_tools_accept_every_message(tmp_path):
    """rosidl converts each .msg to IDL and parses it, as rosidl_generate_interfaces does on a robot."""
    subprocess.run([SYSTEM_PYTHON, "-c", ROSIDL_CHECK, str(REPO), str(tmp_path)], check=True, timeout=120)
    fields = json.loads((tmp_path / "fields.json").read_text())
    assert set(fields) == {"Matches", "Homography", "RelativePose"}
    assert fields["Matches"] == list(matches_fields(example_pair(), Stamp(1, 2), Stamp(0, 1), "stereo", "m", "w",
                                                    0.1))


def test_field_builders_produce_exactly_the_message_fields():
    definitions = {name.rsplit("/", 1)[1]: text for name, text in msg_definitions().items()}
    pair = example_pair()
    matches = matches_fields(pair, Stamp(5, 6, "cam1"), Stamp(3, 4, "cam0"), "keyframe", "model", "weights", 0.25)
    assert list(matches) == message_fields(definitions["Matches"])
    np.testing.assert_array_equal(matches["matches"], np.array([1, 0], np.uint32))
    np.testing.assert_array_equal(matches["reference_keypoints"], np.array([1, 2, 3, 4], np.float32))
    assert matches["mode"] == 2 and matches["reference_height"] == 10 and matches["width"] == 22
    assert matches["header"] == {"stamp": {"sec": 5, "nanosec": 6}, "frame_id": "cam1"}
    estimate = estimate_homography(np.zeros((0, 2)), np.zeros((0, 2)))
    homography = homography_fields(estimate, Stamp(5, 6), Stamp(3, 4))
    assert list(homography) == message_fields(definitions["Homography"])
    assert not homography["valid"] and homography["reason"] and homography["h"].shape == (9,)
    pose = relative_pose_fields(Stamp(5, 6), Stamp(3, 4), (np.eye(3), np.array([0.0, 0.0, 2.0]), np.ones(7, bool)),
                                9, "")
    assert list(pose) == message_fields(definitions["RelativePose"])
    assert pose["valid"] and pose["num_inliers"] == 7 and list(pose["translation"]) == [0.0, 0.0, 1.0]
    invalid = relative_pose_fields(Stamp(5, 6), Stamp(3, 4), None, 3, "too few")
    assert not invalid["valid"] and invalid["reason"] == "too few" and invalid["rotation"].shape == (9,)


def test_rosbags_serialises_what_the_builders_produce():
    from superglue_ros.eval.bagio import build_message, typestore_with_package_messages

    typestore = typestore_with_package_messages()
    fields = matches_fields(example_pair(), Stamp(5, 6), Stamp(3, 4), "sequential", "m", "w", 0.5)
    message = build_message(typestore, "superglue_ros/msg/Matches", fields)
    raw = typestore.serialize_cdr(message, "superglue_ros/msg/Matches")
    back = typestore.deserialize_cdr(raw, "superglue_ros/msg/Matches")
    np.testing.assert_array_equal(back.confidences, np.array([0.9], np.float32))
    assert back.mode == 1 and back.header.stamp.nanosec == 6
    pose = relative_pose_fields(Stamp(5, 6), Stamp(3, 4), (np.eye(3), np.array([1.0, 0, 0]), np.ones(5, bool)), 5, "")
    raw = typestore.serialize_cdr(build_message(typestore, "superglue_ros/msg/RelativePose", pose),
                                  "superglue_ros/msg/RelativePose")
    back = typestore.deserialize_cdr(raw, "superglue_ros/msg/RelativePose")
    assert back.valid and back.num_inliers == 5 and list(back.translation) == [1.0, 0.0, 0.0]


def test_stamp_round_trip():
    stamp = Stamp.from_nanoseconds(1_700_000_000_123_456_789, "cam")
    assert (stamp.sec, stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert stamp.nanoseconds == 1_700_000_000_123_456_789


def test_installed_layout_has_the_messages():
    """pip installs msg/, launch/ and config/ under share/superglue_ros (setup.py data_files)."""
    setup = (REPO / "setup.py").read_text()
    for folder in ("msg", "launch", "config"):
        assert f'share/{{package_name}}/{folder}' in setup


def test_package_xml_declares_what_the_node_imports():
    """Format 3, an interface package, and every ROS package the node imports declared as a dependency."""
    import re
    import sys
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "superglue_ros"
    assert root.findtext("export/build_type") == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    declared = {element.text for element in root if element.tag.endswith("depend")}
    source = (REPO / "superglue_ros" / "ros" / "node.py").read_text()
    imported = set(re.findall(r"^from (\w+)(?:\.\w+)* import", source, re.MULTILINE)) - {"__future__", "typing"}
    ros_packages = {name for name in imported if name not in sys.stdlib_module_names and name != "numpy"}
    assert ros_packages <= declared, ros_packages - declared
