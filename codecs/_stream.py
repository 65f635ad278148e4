"""The frame every rawgate codec writes: magic, JSON header, sections, CRC-32.

Layout (little-endian)::

    b"RGCS" | u8 version | u32 header length | header (UTF-8 JSON) |
    section 0 | section 1 | … | u32 CRC-32 of everything before it

The header names the codec and its configuration, the original dtype and shape, and the byte
length of every section, so a stream decodes with nothing but itself (and the codec's code), and a
truncated, padded or bit-flipped stream is refused before any section is decoded. imagecodecs'
own formats check little of this (a truncated zstd frame can decode to a short buffer), which is
why the framing is ours.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

__all__ = ["MAGIC", "STREAM_VERSION", "pack", "unpack", "peek_header", "CorruptStreamError"]

MAGIC = b"RGCS"
STREAM_VERSION = 1
_PREFIX = struct.Struct("<4sBI")
_CRC = struct.Struct("<I")


class CorruptStreamError(ValueError):
    """Compressed data that is truncated, corrupted, foreign, or from a newer rawgate."""


def pack(header: dict[str, Any], sections: list[bytes]) -> bytes:
    """Frame ``sections`` behind ``header`` (which gains the section lengths)."""
    header = dict(header, sections=[len(s) for s in sections])
    hb = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    body = b"".join([_PREFIX.pack(MAGIC, STREAM_VERSION, len(hb)), hb, *sections])
    return body + _CRC.pack(zlib.crc32(body))


def _parse_prefix(buf: memoryview) -> tuple[dict[str, Any], int]:
    if len(buf) < _PREFIX.size + _CRC.size:
        raise CorruptStreamError(f"not rawgate compressed data: only {len(buf)} bytes")
    magic, version, hlen = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CorruptStreamError(
            f"not rawgate compressed data (starts with {bytes(magic)!r}, expected {MAGIC!r})"
        )
    if version > STREAM_VERSION:
        raise CorruptStreamError(
            f"stream format version {version} is newer than this rawgate ({STREAM_VERSION}); upgrade"
        )
    start = _PREFIX.size
    if start + hlen > len(buf):
        raise CorruptStreamError("truncated stream: the header runs past the end of the data")
    try:
        header = json.loads(bytes(buf[start : start + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptStreamError(f"corrupted stream header: {e}") from e
    if not isinstance(header, dict) or "codec" not in header or "sections" not in header:
        raise CorruptStreamError("corrupted stream header: codec or sections missing")
    return header, start + hlen


def peek_header(buf: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The header of a stream, without checking its checksum (cheap: for listing and routing)."""
    return _parse_prefix(memoryview(buf).cast("B"))[0]


def unpack(buf: bytes | bytearray | memoryview) -> tuple[dict[str, Any], list[memoryview]]:
    """Verify a stream and split it into its header and sections.

    Raises
    ------
    CorruptStreamError
        Naming what is wrong: not rawgate data, newer version, truncated, extra bytes, or a
        checksum mismatch.
    """
    mv = memoryview(buf).cast("B")
    header, pos = _parse_prefix(mv)
    lengths = header["sections"]
    expected = pos + sum(lengths) + _CRC.size
    if len(mv) < expected:
        raise CorruptStreamError(
            f"truncated stream: {len(mv)} bytes, the header promises {expected}"
        )
    if len(mv) > expected:
        raise CorruptStreamError(
            f"corrupted stream: {len(mv) - expected} unexpected bytes after the end"
        )
    (crc,) = _CRC.unpack_from(mv, expected - _CRC.size)
    if zlib.crc32(mv[: expected - _CRC.size]) != crc:
        raise CorruptStreamError("corrupted stream: CRC-32 mismatch (data changed after writing)")
    sections = []
    for n in lengths:
        sections.append(mv[pos : pos + n])
        pos += n
    return header, sections
