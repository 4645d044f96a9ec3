"""What an encoded image's header says before anything is decoded: its size, and whether it is cut short.

Every format this OpenCV build decodes has its size read here, so that an
image above the pixel bound is refused before the decoder allocates it: a
few kilobytes of deflate TIFF or lossless WebP can otherwise claim
gigabytes. A format whose size cannot be read gives None, and a caller with
a pixel bound refuses it.
"""
from __future__ import annotations

import re

import numpy as np

Size = tuple[int, int]  # (height, width)
PNM_TOKEN = re.compile(rb"\s*(?:#[^\n]*\n\s*)*(\S+)")
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
JPEG_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM: no length field


def truncation(data: np.ndarray) -> str:
    """Why an encoded JPEG or PNG is cut short, or "" (OpenCV would decode the rest as grey)."""
    raw = memoryview(np.ascontiguousarray(data)).cast("B")
    if raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in bytes(raw[-4096:]):
        return "truncated JPEG (no end-of-image marker)"
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in bytes(raw[-32:]):
        return "truncated PNG (no IEND chunk)"
    return ""


def encoded_size(data: np.ndarray) -> Size | None:
    """(height, width) from the header of any format OpenCV decodes here, without decoding it; None when
    the format is not recognised or its header does not say."""
    raw = memoryview(np.ascontiguousarray(data)).cast("B")
    head = bytes(raw[:16])
    for magic, parse in READERS:
        if head.startswith(magic) or (magic == b"ftyp" and head[4:8] == magic):  # ISO media files: at 4
            try:
                return parse(raw)
            except (IndexError, ValueError):  # a header cut short or with nonsense in it
                return None
    return None


def uint(raw: memoryview, offset: int, size: int, order: str) -> int:
    if offset < 0 or offset + size > len(raw):
        raise IndexError("header cut short")
    return int.from_bytes(raw[offset:offset + size], order)


def png_size(raw: memoryview) -> Size | None:
    if bytes(raw[12:16]) != b"IHDR":
        return None
    return uint(raw, 20, 4, "big"), uint(raw, 16, 4, "big")


def jpeg_size(raw: memoryview) -> Size | None:
    """The first start-of-frame segment, found as libjpeg finds it: bytes between segments that are not
    markers are skipped, as are fill bytes, so junk before the SOF does not hide the size."""
    offset = 2
    while offset + 1 < len(raw):
        if raw[offset] != 0xFF:  # junk between segments: libjpeg skips to the next 0xFF
            offset += 1
            continue
        marker = raw[offset + 1]
        if marker in (0xFF, 0x00):  # a fill byte, or a stuffed zero inside junk
            offset += 1 if marker == 0xFF else 2
            continue
        if marker in JPEG_SOF:
            return uint(raw, offset + 5, 2, "big"), uint(raw, offset + 7, 2, "big")
        if marker == 0xDA:  # start of scan before any frame header: nothing to size
            return None
        offset += 2 if marker in JPEG_STANDALONE else 2 + uint(raw, offset + 2, 2, "big")
    return None


def webp_size(raw: memoryview) -> Size | None:
    if bytes(raw[8:12]) != b"WEBP":
        return None
    chunk = bytes(raw[12:16])
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame start code
        if bytes(raw[23:26]) != b"\x9d\x01\x2a":
            return None
        return uint(raw, 28, 2, "little") & 0x3FFF, uint(raw, 26, 2, "little") & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after the signature byte
        bits = uint(raw, 21, 4, "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        return uint(raw, 27, 3, "little") + 1, uint(raw, 24, 3, "little") + 1
    return None


def tiff_size(raw: memoryview) -> Size | None:
    """ImageLength and ImageWidth of the first IFD (the page OpenCV decodes), classic or BigTIFF."""
    order = "little" if bytes(raw[:2]) == b"II" else "big"
    big = uint(raw, 2, 2, order) == 43
    count_size, entry_size, value_size = (8, 20, 8) if big else (2, 12, 4)
    ifd = uint(raw, 8, 8, order) if big else uint(raw, 4, 4, order)
    sizes = {}
    for index in range(min(uint(raw, ifd, count_size, order), 4096)):
        entry = ifd + count_size + index * entry_size
        tag, kind = uint(raw, entry, 2, order), uint(raw, entry + 2, 2, order)
        if tag in (256, 257):
            width = 2 if kind == 3 else value_size if kind == 16 else 4  # SHORT, LONG8, LONG
            sizes[tag] = uint(raw, entry + 4 + value_size, width, order)
    return (sizes[257], sizes[256]) if len(sizes) == 2 else None


def bmp_size(raw: memoryview) -> Size | None:
    if uint(raw, 14, 4, "little") == 12:  # OS/2 core header: 16-bit sizes
        return uint(raw, 20, 2, "little"), uint(raw, 18, 2, "little")
    width = int.from_bytes(raw[18:22], "little", signed=True)
    height = int.from_bytes(raw[22:26], "little", signed=True)  # negative: rows stored top-down
    return abs(height), abs(width)


def pnm_size(raw: memoryview) -> Size | None:
    """P1-P6 and PFM: width and height are the two numbers after the magic, comments allowed; P7 (PAM)
    names them WIDTH and HEIGHT."""
    text = bytes(raw[2:4096])
    if bytes(raw[:2]) == b"P7":
        fields = dict(re.findall(rb"^\s*(WIDTH|HEIGHT)\s+(\d+)", text, re.MULTILINE))
        return int(fields[b"HEIGHT"]), int(fields[b"WIDTH"])
    first = PNM_TOKEN.match(text)
    second = PNM_TOKEN.match(text, first.end()) if first else None
    if second is None:
        return None
    return int(second.group(1)), int(first.group(1))


def gif_size(raw: memoryview) -> Size | None:
    return uint(raw, 8, 2, "little"), uint(raw, 6, 2, "little")  # the logical screen OpenCV decodes into


def jpeg2000_size(raw: memoryview) -> Size | None:
    """From the codestream's SIZ segment, inside a JP2 file's contiguous-codestream box or on its own."""
    offset = 0
    if bytes(raw[4:8]) == b"jP  ":
        while True:  # top-level boxes: length, type, [64-bit length]
            length, kind = uint(raw, offset, 4, "big"), bytes(raw[offset + 4:offset + 8])
            if kind == b"jp2c":
                offset += 16 if length == 1 else 8
                break
            length = uint(raw, offset + 8, 8, "big") if length == 1 else length
            if length < 8:
                return None
            offset += length
    if bytes(raw[offset:offset + 4]) != b"\xff\x4f\xff\x51":
        return None
    width, height = uint(raw, offset + 8, 4, "big"), uint(raw, offset + 12, 4, "big")
    return height - uint(raw, offset + 20, 4, "big"), width - uint(raw, offset + 16, 4, "big")


def hdr_size(raw: memoryview) -> Size | None:
    """Radiance: header lines, a blank line, then the resolution line ('-Y H +X W' or another order)."""
    text = bytes(raw[:65536])
    end = text.find(b"\n\n")
    line = text[end + 2:text.find(b"\n", end + 2)].split() if end >= 0 else []
    if len(line) != 4:
        return None
    axes = {line[0][1:2]: int(line[1]), line[2][1:2]: int(line[3])}
    return axes[b"Y"], axes[b"X"]


def sun_raster_size(raw: memoryview) -> Size | None:
    return uint(raw, 8, 4, "big"), uint(raw, 4, 4, "big")


def avif_size(raw: memoryview) -> Size | None:
    """The largest image spatial extent ('ispe') of the file: the primary image and any grid it forms."""
    text = bytes(raw[:1 << 20])
    sizes = [(uint(raw, match.start() + 12, 4, "big"), uint(raw, match.start() + 8, 4, "big"))
             for match in re.finditer(rb"ispe", text)]
    return max(sizes, key=lambda size: size[0] * size[1]) if sizes else None


READERS = (
    (b"\x89PNG\r\n\x1a\n", png_size),
    (b"\xff\xd8", jpeg_size),
    (b"RIFF", webp_size),
    (b"II*\x00", tiff_size), (b"MM\x00*", tiff_size), (b"II+\x00", tiff_size), (b"MM\x00+", tiff_size),
    (b"BM", bmp_size),
    *((magic, pnm_size) for magic in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7", b"PF", b"Pf")),
    (b"GIF87a", gif_size), (b"GIF89a", gif_size),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", jpeg2000_size), (b"\xff\x4f\xff\x51", jpeg2000_size),
    (b"#?RADIANCE", hdr_size), (b"#?RGBE", hdr_size),
    (b"\x59\xa6\x6a\x95", sun_raster_size),
    (b"ftyp", avif_size),
)
