"""What an encoded image's header says before anything is decoded: its size, and whether it is cut short."""
from __future__ import annotations

import numpy as np


def truncation(data: np.ndarray) -> str:
    """Why an encoded JPEG or PNG is cut short, or "" (OpenCV would decode the rest as grey)."""
    raw = data.tobytes()
    if raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in raw[-4096:]:
        return "truncated JPEG (no end-of-image marker)"
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in raw[-32:]:
        return "truncated PNG (no IEND chunk)"
    return ""


def encoded_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding it; None for other formats."""
    raw = data[:1 << 20].tobytes()
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[20:24], "big"), int.from_bytes(raw[16:20], "big")
    if raw[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(raw):
        if raw[offset] != 0xFF:
            return None
        marker = raw[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(raw[offset + 5:offset + 7], "big"), int.from_bytes(raw[offset + 7:offset + 9], "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        offset += 2 + int.from_bytes(raw[offset + 2:offset + 4], "big")
    return None
