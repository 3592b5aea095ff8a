"""Seeded mutations of DICOM Part 10 files, the same for every protocol the fuzz tests
send them through (STOW-RS in-process and live, DIMSE C-STORE): byte flips, truncations,
wrong value lengths, spliced-in garbage, deeply nested sequences and huge values.

The mutations are of bytes, as a careless or hostile sender's would be; the last two
insert well-formed but extreme elements into an Explicit VR Little Endian data set (the
transfer syntax of every sample they are used with), at the place the standard's
ascending tag order puts them.
"""

from __future__ import annotations

import random
import struct

from tests.samples import make_sample, multipart_body

KINDS = ("flip", "truncate", "lengths", "splice", "deep", "huge")

#: Explicit VR VRs with a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
#: Language Code Sequence (0008,0006): an SQ that sorts right after Specific Character Set.
_DEEP_TAG = (0x0008, 0x0006)
#: Header attributes the archive indexes, with their VR (PS3.6).
_HUGE_TARGETS = [
    ((0x0008, 0x0050), b"SH"),  # Accession Number
    ((0x0008, 0x1030), b"LO"),  # Study Description
    ((0x0010, 0x0010), b"PN"),  # Patient's Name
    ((0x0010, 0x0020), b"LO"),  # Patient ID
    ((0x0020, 0x0011), b"IS"),  # Series Number
    ((0x0020, 0x0013), b"IS"),  # Instance Number
    ((0x0028, 0x0008), b"IS"),  # Number of Frames
]


def dataset_offset(data: bytes) -> int:
    """Where the data set of a Part 10 file starts: after its File Meta group, whose
    length its first element gives (PS3.10 §7.1)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00", "not a Part 10 file"
    return 144 + int.from_bytes(data[140:144], "little")


def mutate(data: bytes, rng: random.Random, *, start: int = 128) -> tuple[str, bytes]:
    """One seeded mutation of the Part 10 file ``data`` at or after byte ``start`` (128
    reaches the File Meta; :func:`dataset_offset` leaves it intact), and its kind."""
    kind = rng.choice(KINDS)
    buffer = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            buffer[rng.randrange(start, len(buffer))] = rng.randrange(256)
    elif kind == "truncate":
        del buffer[rng.randrange(start, len(buffer)) :]
    elif kind == "lengths":
        # A value length field made huge or odd: the 4 bytes after some VR.
        at = rng.randrange(max(start, 132), min(len(buffer) - 4, 4096))
        buffer[at : at + 4] = rng.choice([b"\xff\xff\xff\xfe", b"\x00\x00\x00\x7f", b"\x01\x00\x00\x00"])
    elif kind == "splice":
        at = rng.randrange(start, len(buffer))
        buffer[at:at] = rng.randbytes(rng.randint(1, 64))
    elif kind == "deep":
        _insert(buffer, _DEEP_TAG, _deep_sequence(rng))
    else:
        tag, vr = rng.choice(_HUGE_TARGETS)
        _replace(buffer, tag, _huge_element(rng, tag, vr))
    return kind, bytes(buffer)


def stow_request(rng: random.Random, studies: list[str]) -> tuple[str, bytes, str]:
    """A seeded STOW-RS request of 1 to 3 new instances, most of them mutated, its framing
    sometimes broken too: (path, body, Content-Type). ``studies`` are stored studies a
    request may name in its path."""
    fresh = [make_sample(rng.choice(["ct", "mr", "jpeg", "rle"])) for _ in range(rng.randint(1, 3))]
    parts = [mutate(s.data, rng)[1] if rng.random() < 0.8 else s.data for s in fresh]
    body, ctype = multipart_body(parts)
    framing = rng.random()
    if framing < 0.1:
        body = body[: rng.randrange(len(body))]  # cut off mid-body
    elif framing < 0.15:
        ctype = ctype.split(";")[0]  # no boundary
    elif framing < 0.2:
        ctype = rng.choice(["application/dicom", "text/plain", "multipart/related; boundary=", "x"])
    path = (
        "/dicom-web/studies"
        if rng.random() < 0.8 or not studies
        else f"/dicom-web/studies/{rng.choice(studies)}"
    )
    return path, body, ctype


def _deep_sequence(rng: random.Random) -> bytes:
    """Sequences nested ``depth`` deep, each in an item of the one above, all of undefined
    length (PS3.5 §7.5.2): deeper than any recursive parser's stack at the larger depths,
    and sometimes cut off before its delimiters."""
    depth = rng.choice([8, 100, 1_000, 20_000])
    sq = struct.pack("<HH", *_DEEP_TAG) + b"SQ\x00\x00" + struct.pack("<I", _UNDEFINED)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, _UNDEFINED)
    leaf = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"  # a Specific Character Set in the innermost
    closers = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    if rng.random() < 0.2:
        closers = b""
    return (sq + item) * depth + leaf + closers * depth


def _huge_element(rng: random.Random, tag: tuple[int, int], vr: bytes) -> bytes:
    """``tag`` with a value far beyond its VR's maximum: as long as a 2-byte length allows,
    or megabytes long, sent as UN (which has a 4-byte length, PS3.5 §6.2.2)."""
    size = rng.choice([65, 1_025, 0xFFFE, 3 << 20])
    digits = vr == b"IS"
    value = (b"9" if digits else b"A") * size
    if size <= 0xFFFE and rng.random() < 0.7:
        return struct.pack("<HH", *tag) + vr + struct.pack("<H", size) + value
    return struct.pack("<HH", *tag) + b"UN\x00\x00" + struct.pack("<I", size) + value


def _elements(buffer: bytearray, at: int) -> list[tuple[tuple[int, int], int, int]]:
    """The data set's top-level elements up to Pixel Data: (tag, start, end)."""
    found = []
    while at + 8 <= len(buffer):
        tag = struct.unpack_from("<HH", buffer, at)
        if tag >= (0x7FE0, 0x0010):
            break
        end = _skip(buffer, at)
        found.append((tag, at, end))
        at = end
    return found


def _skip(buffer: bytearray, at: int) -> int:
    """The end of the Explicit VR Little Endian element at ``at`` (an undefined length
    followed through its nested items and delimiters)."""
    depth = 0
    while True:
        group, element = struct.unpack_from("<HH", buffer, at)
        if group == 0xFFFE:
            (length,) = struct.unpack_from("<I", buffer, at + 4)
            at += 8
            if element == 0xE000 and length != _UNDEFINED:
                at += length
            elif element == 0xE000:
                depth += 1
            else:  # an item's or the sequence's delimiter
                depth -= 1
        else:
            vr = bytes(buffer[at + 4 : at + 6])
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<I", buffer, at + 8)
                at += 12
            else:
                (length,) = struct.unpack_from("<H", buffer, at + 6)
                at += 8
            if length == _UNDEFINED:
                depth += 1
            else:
                at += length
        if depth == 0:
            return at


def _insert(buffer: bytearray, tag: tuple[int, int], element: bytes) -> None:
    """Insert ``element`` where ascending tag order puts ``tag``."""
    start = dataset_offset(bytes(buffer[:1024]))
    elements = _elements(buffer, start)
    at = next((s for t, s, _ in elements if t > tag), elements[-1][2] if elements else start)
    buffer[at:at] = element


def _replace(buffer: bytearray, tag: tuple[int, int], element: bytes) -> None:
    """Put ``element`` in place of the element ``tag``, or insert it where it belongs."""
    for t, s, e in _elements(buffer, dataset_offset(bytes(buffer[:1024]))):
        if t == tag:
            buffer[s:e] = element
            return
    _insert(buffer, tag, element)
