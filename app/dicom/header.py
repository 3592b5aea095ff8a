"""What the archive needs from a DICOM Part 10 file, read without loading its bulk data.

:func:`read_instance` parses the header of a file on local disk: the identifying UIDs, the
data set with every value above :data:`BULK_DATA_THRESHOLD` left where it lies, the byte
position of each such bulk value, and the layout of the Pixel Data (native, or the
fragments of encapsulated data, PS3.5 §A.4) found by reading only element and item headers.
:func:`to_dicom_json` renders the data set as DICOM JSON (PS3.18 Annex F) with bulk values
replaced by ``BulkDataURI`` placeholders that the server turns into absolute URIs.

Byte positions are absolute file offsets, so a bulk value or a frame is later served with
ranged reads of the stored object. Values are located in the file's own byte order.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, VR

from app.dicom import raw_json

__all__ = [
    "BULK_DATA_THRESHOLD",
    "BULK_PLACEHOLDER",
    "PIXEL_DATA_PATH",
    "BulkLocation",
    "HeaderError",
    "ParsedInstance",
    "PixelLayout",
    "read_instance",
    "to_dicom_json",
]

#: Prefix of the placeholder ``BulkDataURI`` values written by :func:`to_dicom_json`; the
#: server replaces it with the instance's absolute ``.../bulkdata/`` URL (PS3.18 §F.2.6).
BULK_PLACEHOLDER = "@bulk/"

#: A binary value (OB, OD, OF, OL, OV, OW, UN) longer than this many bytes is bulk data:
#: sent as a BulkDataURI, never inline (PS3.18 §F.2.7), and never read by the header parser.
BULK_DATA_THRESHOLD = 1024

#: Bulk path of (7FE0,0010) Pixel Data.
PIXEL_DATA_PATH = "7FE00010"

# Pixel Data, Float Pixel Data, Double Float Pixel Data, with their VR in Implicit VR
# Little Endian (PS3.5 §A.1: Pixel Data is OW there).
_PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
# PS3.5 §7.1.2: these VRs have a reserved field and a 32-bit length in Explicit VR.
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
# As pydicom's DICOM JSON writer classifies binary values.
_BINARY_VRS = (BYTES_VR | AMBIGUOUS_VR) - {VR.US_SS}
# Binary VRs whose meaning never changes on conversion, so a value can be classified as
# bulk from its raw header alone (UN may turn out to be a known VR on conversion).
_FIXED_BINARY_VRS = BYTES_VR - {VR.UN}
# PS3.5 §9.1: a UID is at most 64 characters of digits and dots.
_UID = re.compile(r"[0-9.]{1,64}")
# What pydicom raises, besides its own InvalidDicomError, on malformed input. It reads
# nested sequences (PS3.5 §7.5) recursively: sequences nested deeper than the interpreter's
# recursion limit allows are a RecursionError, which unwinds like any other.
_PARSE_ERRORS = (
    InvalidDicomError, BytesLengthException, EOFError, ValueError, struct.error, OSError,
    KeyError, IndexError, TypeError, NotImplementedError, OverflowError, zlib.error, RecursionError,
)  # fmt: skip


class HeaderError(Exception):
    """The file is not a usable DICOM Part 10 instance; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BulkLocation(NamedTuple):
    """Where a bulk value lies: absolute file offset of its first byte and its length
    (None for undefined-length encapsulated Pixel Data)."""

    offset: int
    length: int | None


@dataclass(frozen=True)
class PixelLayout:
    """The Pixel Data element as stored (PS3.5 §8.2, §A.4).

    ``value_offset`` is the absolute offset of the value's first byte (for encapsulated
    data, of the Basic Offset Table item header). ``fragments`` are ``(offset, length)``
    of each fragment's data, after the item header; ``basic_offset_table`` its entries,
    possibly empty. Both are empty for native data."""

    tag: int
    vr: str
    value_offset: int
    value_length: int | None
    encapsulated: bool
    fragments: list[tuple[int, int]] = field(default_factory=list)
    basic_offset_table: list[int] = field(default_factory=list)
    #: Indices of the fragments that open a codestream (JPEG, JPEG-LS, JPEG 2000): where
    #: frames begin when one frame spans several fragments and no offset table says so.
    frame_starts: list[int] = field(default_factory=list)


@dataclass
class ParsedInstance:
    """A parsed Part 10 header. ``dataset`` has no Pixel Data; top-level bulk values are
    left unread (deferred), every other value is loaded. ``bulk`` maps each bulk path
    (``7FE00010``, ``00540016/0/00181078``: tag, item index, tag...) to its location.

    Elements after the Pixel Data (such as Data Set Trailing Padding) are not read.

    In a Deflated Explicit VR Little Endian file (PS3.5 §A.5) offsets into the inflated
    data mean nothing in the stored bytes, so ``pixel`` is None, ``bulk`` is empty and the
    DICOM JSON carries binary values inline."""

    dataset: Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    pixel: PixelLayout | None
    bulk: dict[str, BulkLocation]
    #: Top-level elements already in DICOM JSON, made from their encoded bytes
    #: (:mod:`app.dicom.raw_json`) and left unconverted in ``dataset``.
    rendered: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def read_instance(fp: BinaryIO) -> ParsedInstance:
    """Parse the Part 10 file ``fp``, opened for binary reading and seekable by the caller,
    who owns it (blocking: run it in a thread). Values over the threshold are left unread
    and come from ``fp`` while this runs only: it may be closed afterwards.

    Requires the 128-byte preamble, the ``DICM`` prefix and File Meta Information with a
    Transfer Syntax UID (PS3.10 §7.1), and non-empty SOP Class, SOP Instance, Study and
    Series Instance UIDs. Raises HeaderError otherwise, or if the file is truncated or
    malformed; OSError only if ``fp`` cannot be read."""
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    transfer_syntax = _transfer_syntax(fp)
    deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
    ds = _parse(fp, deflated)
    pixel_at = fp.tell()
    rendered: dict[int, dict[str, Any]] = {}
    if deflated:
        pixel, bulk = None, _locate_bulk(ds, inflated=True)
    else:
        _check_lengths(ds, size, pixel_at)
        implicit, little = ds.original_encoding[0], ds.original_encoding[1]
        bulk = _locate_bulk(ds, inflated=False, rendered=rendered if little else None)
        pixel = _pixel_layout(fp, pixel_at, size, bool(implicit), bool(little))
        if pixel is None and "Rows" in ds and "PixelDataProviderURL" not in ds:
            # PS3.3 §C.7.6.3: Pixel Data is required with the Image Pixel Module unless
            # it is provided by reference; its absence here means a cut-off file.
            raise HeaderError("truncated file: the Image Pixel Module has no Pixel Data")
    if pixel is not None:
        bulk[f"{pixel.tag:08X}"] = BulkLocation(pixel.value_offset, pixel.value_length)
    _check_keys(ds)
    return ParsedInstance(
        ds,
        transfer_syntax,
        _uid(ds, "SOPClassUID", "(0008,0016)"),
        _uid(ds, "SOPInstanceUID", "(0008,0018)"),
        _uid(ds, "StudyInstanceUID", "(0020,000D)"),
        _uid(ds, "SeriesInstanceUID", "(0020,000E)"),
        pixel,
        bulk,
        rendered,
    )


def to_dicom_json(parsed: ParsedInstance) -> dict[str, Any]:
    """The data set as DICOM JSON (PS3.18 Annex F), as pydicom's ``to_json_dict`` renders
    it except that each value in ``parsed.bulk`` becomes
    ``{"vr": ..., "BulkDataURI": "@bulk/<path>"}`` (see :data:`BULK_PLACEHOLDER`) and the
    Pixel Data, absent from the data set, is added the same way.

    Nothing is read from the file (:func:`read_instance` loaded every non-bulk value), so
    this works after the file has been moved."""
    result = _dataset_json(parsed.dataset, "", parsed.bulk, parsed.rendered)
    if parsed.pixel is not None:
        path = f"{parsed.pixel.tag:08X}"
        result[path] = {"vr": parsed.pixel.vr, "BulkDataURI": BULK_PLACEHOLDER + path}
    return result


def _transfer_syntax(fp: BinaryIO) -> str:
    """Check the preamble and prefix and read the File Meta Information (PS3.10 §7.1)."""
    head = fp.read(132)
    if len(head) < 132 or head[128:] != b"DICM":
        raise HeaderError("not a DICOM Part 10 file: no 'DICM' prefix after the 128-byte preamble")
    try:
        # What pydicom's read_file_meta_info does after opening a path and checking the
        # prefix (done above): the group 0002 elements from the file already open.
        meta = _read_file_meta_info(fp)
        uid = meta.get("TransferSyntaxUID")
    except _PARSE_ERRORS as exc:
        raise HeaderError(f"unreadable File Meta Information ({type(exc).__name__})") from exc
    if not meta:
        raise HeaderError("the File Meta Information (group 0002) is missing")
    if not uid or not isinstance(uid, str) or not _UID.fullmatch(uid.strip()):
        raise HeaderError("the File Meta Information has no valid Transfer Syntax UID (0002,0010)")
    return uid.strip()


def _parse(fp: BinaryIO, deflated: bool) -> Dataset:
    """Read the data set up to the Pixel Data, leaving values over the threshold unread.

    pydicom re-reads a deferred value from the file by name, one element at a time; in
    a deflated file it could only re-read compressed bytes, so nothing is deferred there
    (pydicom inflates that data set into memory anyway)."""
    fp.seek(0)
    try:
        return pydicom.dcmread(
            fp, stop_before_pixels=True, defer_size=None if deflated else BULK_DATA_THRESHOLD
        )
    except _PARSE_ERRORS as exc:
        raise HeaderError(f"malformed data set ({type(exc).__name__})") from exc


def _check_lengths(ds: Dataset, size: int, stop: int) -> None:
    """Detect truncation, which pydicom tolerates silently: a value running past the end
    of the file, or (when reading ran to the end) bytes after the last element that are
    too few to form another."""
    end: int | None = None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        end = None
        if isinstance(raw, RawDataElement) and raw.length != _UNDEFINED:
            end = raw.value_tell + raw.length
            if end > size:
                raise HeaderError(f"truncated file: element {_tag(tag)} runs past the end of the file")
    if stop >= size and end is not None and end != size:
        raise HeaderError(f"truncated file: {size - end} stray bytes after the last element")


def _locate_bulk(
    ds: Dataset, inflated: bool, rendered: dict[int, dict[str, Any]] | None = None
) -> dict[str, BulkLocation]:
    """Load every non-bulk value and locate every bulk one, sequences included. With
    ``rendered`` (a little-endian data set), top-level values plain enough are put there
    as DICOM JSON from their bytes instead of being loaded."""
    found: dict[str, BulkLocation] = {}
    codec = _codec(ds) if rendered is not None else None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not inflated and isinstance(raw, RawDataElement) and _raw_bulk_vr(raw) is not None:
            found[f"{tag:08X}"] = BulkLocation(raw.value_tell, raw.length)
            continue
        if rendered is not None and isinstance(raw, RawDataElement) and raw.length != _UNDEFINED:
            vr = _plain_vr(raw)
            value = raw.value
            if vr is not None and isinstance(value, bytes):
                as_json = raw_json.element_json(vr, value, codec)
                if as_json is not None:
                    rendered[tag] = as_json
                    continue
        elem = _load(ds, tag)
        if not inflated:
            _locate(elem, 0, f"{tag:08X}", found)
    return found


def _codec(ds: Dataset) -> str | None:
    """The codec of the data set's text, when :mod:`app.dicom.raw_json` handles it."""
    try:
        charset = ds.get("SpecificCharacterSet")
    except _PARSE_ERRORS:
        return None
    return raw_json.CODECS.get(charset) if charset is None or isinstance(charset, str) else None


def _plain_vr(raw: RawDataElement) -> str | None:
    """The VR of a raw element, when it is known for sure: explicit, or the data
    dictionary's single VR of a standard tag (PS3.6) in Implicit VR."""
    if raw.VR is not None:
        return str(raw.VR)
    if raw.tag.is_private:
        return None
    try:
        vr = dictionary_VR(raw.tag)
    except KeyError:
        return None
    return None if " " in vr else vr


def _locate(elem: DataElement, base: int, path: str, found: dict[str, BulkLocation]) -> None:
    """Record ``elem`` (or, for a sequence, its bulk descendants) if it is bulk.

    pydicom records each value's position relative to the stream it was parsed from: the
    file for the top level and for the items of an undefined-length sequence read from
    it, but a copy of the value for a defined-length sequence. ``base`` is the file
    offset of that stream's first byte."""
    if elem.VR == VR.SQ:
        inner = base if elem.is_undefined_length or elem.file_tell is None else base + elem.file_tell
        for index, item in enumerate(elem.value):
            for tag in list(item.keys()):
                _locate(_load(item, tag), inner, f"{path}/{index}/{tag:08X}", found)
    elif _is_bulk(elem) and elem.file_tell is not None:
        found[path] = BulkLocation(base + elem.file_tell, len(elem.value))


def _load(ds: Dataset, tag: int) -> DataElement:
    try:
        return ds[tag]
    except _PARSE_ERRORS as exc:
        # The reason without the value: it may be a patient's name, and reasons are logged.
        raise HeaderError(f"invalid value in element {_tag(tag)} ({type(exc).__name__})") from exc


def _raw_bulk_vr(raw: RawDataElement) -> str | None:
    """The VR of a still-raw bulk value, or None if it is not bulk or cannot be told
    without converting it (ambiguous, UN or private in Implicit VR)."""
    if raw.length == _UNDEFINED or raw.length <= BULK_DATA_THRESHOLD:
        return None
    vr = raw.VR
    if vr is None:  # Implicit VR: the data dictionary's (PS3.6)
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return None
    return vr if vr in _FIXED_BINARY_VRS else None


def _is_bulk(elem: DataElement) -> bool:
    value = elem.value
    return elem.VR in _BINARY_VRS and isinstance(value, bytes) and len(value) > BULK_DATA_THRESHOLD


def _dataset_json(
    ds: Dataset, prefix: str, bulk: dict[str, BulkLocation], rendered: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Dataset.to_json_dict, but with the placeholders at the paths in ``bulk``, and the
    elements of ``rendered`` as they are there."""
    result: dict[str, Any] = {}
    for tag in ds.keys():
        key = f"{tag:08X}"
        path = prefix + key
        if rendered is not None and (done := rendered.get(tag)) is not None:
            result[key] = done
            continue
        if path in bulk:
            result[key] = {"vr": _bulk_vr(ds, tag), "BulkDataURI": BULK_PLACEHOLDER + path}
            continue
        elem = ds[tag]
        if elem.VR == VR.SQ:
            items = [_dataset_json(item, f"{path}/{i}/", bulk) for i, item in enumerate(elem.value)]
            result[key] = {"vr": "SQ", "Value": items}
        else:
            result[key] = _element_json(elem)
    return result


def _element_json(elem: DataElement) -> dict[str, Any]:
    """One element in DICOM JSON. A value that has no DICOM JSON form (a DS or IS that is
    not a number, PS3.18 §F.2.3) is left out, keeping the element's VR: the stored object
    still holds it unchanged, and one bad value must not make the instance unstorable.
    NUL characters are dropped from text (PS3.5 §6.2 allows them only as UI padding, and
    JSON text in PostgreSQL cannot hold them).
    """
    try:
        value: dict[str, Any] = _without_nul(elem.to_json_dict(None, BULK_DATA_THRESHOLD))
        return value
    except _PARSE_ERRORS:
        return {"vr": str(elem.VR)}


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _bulk_vr(ds: Dataset, tag: int) -> str:
    item = ds.get_item(tag, keep_deferred=True)
    if isinstance(item, RawDataElement):
        vr = _raw_bulk_vr(item)
        assert vr is not None  # it was classified as bulk by this very test
        return vr
    return str(item.VR)


def _pread(fp: BinaryIO, length: int, at: int) -> bytes:
    """Up to ``length`` bytes of ``fp`` at offset ``at``."""
    fp.seek(at)
    return fp.read(length)


def _pixel_layout(fp: BinaryIO, at: int, size: int, implicit: bool, little: bool) -> PixelLayout | None:
    """Parse the Pixel Data element header at ``at``, where pydicom stopped reading."""
    if at >= size:
        return None
    order = "<" if little else ">"
    head = _pread(fp, 12, at)
    if len(head) < 8:
        raise HeaderError(f"truncated file: incomplete element header at offset {at}")
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS:
        raise HeaderError(f"malformed data set: unexpected {_tag(tag)} at offset {at}")
    if implicit:
        vr, (length,), value_at = _PIXEL_TAGS[tag], struct.unpack(order + "L", head[4:8]), at + 8
    elif (vr := head[4:6].decode("latin-1")) in _LONG_VRS and len(head) == 12:
        (length,), value_at = struct.unpack(order + "L", head[8:12]), at + 12
    else:
        raise HeaderError(f"malformed Pixel Data element: VR {vr!r}")
    if length == _UNDEFINED:
        table, fragments = _encapsulated(fp, value_at, size, order)
        return PixelLayout(tag, vr, value_at, None, True, fragments, table, _frame_starts(fp, fragments))
    if value_at + length > size:
        raise HeaderError("truncated file: Pixel Data runs past the end of the file")
    return PixelLayout(tag, vr, value_at, length, False)


def _encapsulated(fp: BinaryIO, at: int, size: int, order: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Walk the items of encapsulated Pixel Data (PS3.5 §A.4) by their headers alone:
    the Basic Offset Table item, then one item per fragment, then the delimiter."""
    items: list[tuple[int, int]] = []
    while True:
        head = _pread(fp, 8, at)
        if len(head) < 8:
            raise HeaderError("truncated file: encapsulated Pixel Data has no sequence delimiter")
        group, element, length = struct.unpack(order + "HHL", head)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            break
        if tag != _ITEM or length == _UNDEFINED:
            raise HeaderError(f"malformed encapsulated Pixel Data: {_tag(tag)} at offset {at}")
        if at + 8 + length > size:
            raise HeaderError("truncated file: a Pixel Data fragment runs past the end of the file")
        items.append((at + 8, length))
        at += 8 + length
    if not items or items[0][1] % 4:
        raise HeaderError("malformed encapsulated Pixel Data: no valid Basic Offset Table item")
    offset, length = items[0]
    table = list(struct.unpack(f"{order}{length // 4}L", _pread(fp, length, offset)))
    return table, items[1:]


# Markers that open a codestream: JPEG and JPEG-LS SOI (ITU T.81 B.2.1, T.87), JPEG 2000
# SOC (ITU T.800 A.4.1) and the JP2 signature box (T.800 I.5.1).
_CODESTREAM_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def _frame_starts(fp: BinaryIO, fragments: list[tuple[int, int]]) -> list[int]:
    """Fragments that begin a frame, found by peeking at their first bytes (PS3.5 §A.4:
    a frame may span fragments, but a fragment never holds parts of two frames)."""
    starts = []
    for index, (offset, length) in enumerate(fragments):
        head = _pread(fp, min(length, 12), offset)
        if head.startswith(_CODESTREAM_STARTS):
            starts.append(index)
    return starts


#: The attributes the index looks instances up by, with their VR's maximum length in
#: characters (PS3.5 Table 6.2-1): patient identity, accession number, modality.
_KEYS = {0x00100020: ("PatientID", 64), 0x00100021: ("IssuerOfPatientID", 64),
         0x00080050: ("AccessionNumber", 16), 0x00080060: ("Modality", 16)}  # fmt: skip
#: The longest value of those the index takes, in bytes: a few times what their VRs
#: allow (senders bend the standard), and short enough for a database index entry.
MAX_KEY_BYTES = 256


def _check_keys(ds: Dataset) -> None:
    """Refuse an instance whose identity or look-up keys are far longer than their VRs
    allow: the index could not hold them, and no conforming sender sends them."""
    for tag, (keyword, maximum) in _KEYS.items():
        if tag not in ds:
            continue
        value = _load(ds, tag).value
        size = len(value) if isinstance(value, bytes) else len(str(value).encode("utf-8", "surrogateescape"))
        if size > MAX_KEY_BYTES:
            raise HeaderError(
                f"{keyword} {_tag(tag)} is {size} bytes long: at most {MAX_KEY_BYTES} are indexed "
                f"(its VR allows {maximum} characters, PS3.5 Table 6.2-1)"
            )


def _uid(ds: Dataset, keyword: str, tag: str) -> str:
    try:
        value = ds.get(keyword)
    except _PARSE_ERRORS as exc:
        raise HeaderError(f"invalid {keyword} {tag}: {exc}") from exc
    if not value:
        raise HeaderError(f"missing or empty {keyword} {tag}")
    if not isinstance(value, str) or not _UID.fullmatch(value.strip()):
        raise HeaderError(f"invalid {keyword} {tag}: {value!r}")
    return value.strip()


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
