"""An image's size as OpenCV will decode it, read from the file's header (no pixel decoding).

JPEG (SOF marker + EXIF orientation of the APP1 segment) and PNG (IHDR + ``eXIf`` chunk before the
image data) are parsed here: a few reads per file. OpenCV's ``imread``/``imdecode`` (IMREAD_COLOR)
applies the EXIF orientation, so orientations 5-8 swap width and height; ``ImageHeader.width`` /
``height`` are the decoded size. A JPEG without its end-of-image marker or a PNG without its IEND
chunk is reported unreadable (OpenCV refuses both). Other formats (BMP, WebP, TIFF...) are decoded
once with OpenCV to learn their size.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["ImageHeader", "Unreadable", "read_image_header"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_NO_LENGTH = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a length field
_TAIL = 1 << 16  # bytes searched from the end for the end marker (data after it is allowed)


class Unreadable(Exception):
    """The file is not an image OpenCV can decode; the message says why."""


@dataclass(frozen=True)
class ImageHeader:
    width: int  # as decoded (EXIF orientation applied)
    height: int
    stored_width: int  # as stored in the file
    stored_height: int
    orientation: int  # EXIF orientation, 1 (none) to 8
    kind: str  # jpeg | png | other


def read_image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """The decoded size of the image at ``path``; ``FileNotFoundError`` when it is absent,
    ``Unreadable`` when OpenCV could not decode it."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg(fh)
        if head == _PNG_SIGNATURE:
            return _png(fh)
    return _decoded(path)


def _oriented(w: int, h: int, orientation: int, kind: str) -> ImageHeader:
    if w <= 0 or h <= 0:
        raise Unreadable(f"its {kind.upper()} header gives a size of {w}x{h}")
    o = orientation if 1 <= orientation <= 8 else 1
    dw, dh = (h, w) if o >= 5 else (w, h)
    return ImageHeader(dw, dh, w, h, o, kind)


def _has_tail(fh: BinaryIO, marker: bytes) -> bool:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - _TAIL))
    return marker in fh.read()


def _jpeg(fh: BinaryIO) -> ImageHeader:
    fh.seek(2)
    orientation = 1
    while True:
        b = fh.read(1)
        while b == b"\xff":  # fill bytes before a marker
            b = fh.read(1)
        if not b:
            raise Unreadable("the JPEG ends before its frame header (truncated)")
        marker = b[0]
        if marker in _NO_LENGTH:
            continue
        raw = fh.read(2)
        if len(raw) < 2:
            raise Unreadable("the JPEG ends inside a segment header (truncated)")
        length = struct.unpack(">H", raw)[0] - 2
        if length < 0:
            raise Unreadable("a JPEG segment has a negative length (corrupt)")
        if marker in _SOF:
            seg = fh.read(min(length, 5))
            if len(seg) < 5:
                raise Unreadable("the JPEG frame header is cut short (truncated)")
            h, w = struct.unpack(">HH", seg[1:5])
            break
        if marker == 0xE1 and orientation == 1:
            orientation = _exif_orientation(fh.read(length), skip_prefix=True)
        else:
            fh.seek(length, os.SEEK_CUR)
    if not _has_tail(fh, b"\xff\xd9"):
        raise Unreadable("the JPEG has no end-of-image marker (truncated)")
    return _oriented(w, h, orientation, "jpeg")


def _png(fh: BinaryIO) -> ImageHeader:
    ihdr = fh.read(25)
    if len(ihdr) < 25 or ihdr[4:8] != b"IHDR":
        raise Unreadable("the PNG has no IHDR header (corrupt)")
    w, h = struct.unpack(">II", ihdr[8:16])
    orientation = 1
    while True:  # chunks up to the image data: an eXIf chunk there is what OpenCV applies
        raw = fh.read(8)
        if len(raw) < 8:
            raise Unreadable("the PNG ends before its image data (truncated)")
        length, kind = struct.unpack(">I4s", raw)
        if kind == b"IDAT":
            break
        if kind == b"eXIf":
            orientation = _exif_orientation(fh.read(length), skip_prefix=False)
            fh.seek(4, os.SEEK_CUR)
        else:
            fh.seek(length + 4, os.SEEK_CUR)
    if not _has_tail(fh, _PNG_IEND[4:8]):
        raise Unreadable("the PNG has no IEND chunk (truncated)")
    return _oriented(w, h, orientation, "png")


def _exif_orientation(data: bytes, skip_prefix: bool) -> int:
    """The Orientation tag (0x0112) of IFD0 of an EXIF block; 1 when absent or unparseable."""
    if skip_prefix:
        if not data.startswith(b"Exif\x00\x00"):
            return 1
        data = data[6:]
    if data[:4] == b"II*\x00":
        end = "<"
    elif data[:4] == b"MM\x00*":
        end = ">"
    else:
        return 1
    try:
        (ifd,) = struct.unpack(end + "I", data[4:8])
        (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
        for i in range(count):
            entry = data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, typ = struct.unpack(end + "HH", entry[:4])
            if tag == 0x0112 and typ == 3:
                (value,) = struct.unpack(end + "H", entry[8:10])
                return int(value) if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _decoded(path: str | os.PathLike[str]) -> ImageHeader:
    """Formats without a parser here: decode once with OpenCV (as the evaluator will)."""
    import cv2
    import numpy as np

    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise Unreadable("OpenCV cannot decode it" if data.size else "the file is empty")
    h, w = img.shape[:2]
    return ImageHeader(int(w), int(h), int(w), int(h), 1, "other")
