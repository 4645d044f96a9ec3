"""SuperPoint's heads in half precision for the fixed path's fast modes, against float32.

The CPU runs float16 convolutions slowly but with the same storage type, so
the keypoints a GPU's fast mode selects can be checked here: nearly all of
float32's, with the same descriptors to within half precision.
"""
from __future__ import annotations

import cv2
import torch
import torch.nn.functional as F

from superglue_ros import SuperPoint
from superglue_ros.models.fixed_keypoints import extract_fixed, half_superpoint

from conftest import GOLDEN, require

# Share of float32's keypoints the half-precision heads must select again on real frames.
MIN_SAME_KEYPOINTS = 0.99


def test_half_superpoint_is_a_channels_last_copy_and_leaves_the_original_alone():
    superpoint = SuperPoint(max_keypoints=64).eval()
    half = half_superpoint(superpoint, torch.float16)
    assert half is not superpoint and half.config == superpoint.config
    for name, weight in half.state_dict().items():
        assert weight.dtype == torch.float16, name
        assert torch.equal(weight.float(), superpoint.state_dict()[name].half().float()), name
    assert half.conv2a.weight.is_contiguous(memory_format=torch.channels_last)
    assert superpoint.conv2a.weight.dtype == torch.float32
    assert superpoint.conv2a.weight.is_contiguous()


def test_float16_heads_keep_the_float32_keypoints_on_real_frames(freiburg_frames):
    superpoint = SuperPoint(max_keypoints=512).eval()
    superpoint.load_state_dict(torch.load(require(GOLDEN / "synthetic" / "superpoint.pth")))
    half = half_superpoint(superpoint, torch.float16)
    same = total = 0
    for path in freiburg_frames[:2]:
        gray = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (320, 240), interpolation=cv2.INTER_AREA)
        image = torch.from_numpy(gray).float()[None, None] / 255
        with torch.inference_mode():
            exact, fast = extract_fixed(superpoint, image), extract_fixed(half, image)
        assert fast.descriptors.dtype == torch.float32 and fast.scores.dtype == torch.float32
        positions = {tuple(p): i for i, p in enumerate(exact.keypoints[0][exact.valid[0]].tolist())}
        for j, point in enumerate(fast.keypoints[0][fast.valid[0]].tolist()):
            i = positions.get(tuple(point))
            if i is None:
                continue
            same += 1
            cosine = F.cosine_similarity(exact.descriptors[0, i], fast.descriptors[0, j], dim=0)
            assert cosine > 0.999, (point, float(cosine))
        total += len(positions)
    assert total > 500 and same >= MIN_SAME_KEYPOINTS * total, (same, total)
