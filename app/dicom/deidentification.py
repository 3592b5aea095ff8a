"""De-identification by the Basic Application Level Confidentiality Profile (PS3.15 Annex E).

The profile's table (PS3.15 Table E.1-1, the "Basic Profile" column) comes as data from
the ``dicom-anonymizer`` package, which generates it from the standard's own tables
(edition 2026c); this module applies it, to a pydicom data set (the files) and to DICOM
JSON (QIDO and metadata), the same way:

- **X** remove, **Z** empty (zero length), **D** a dummy value of the VR, **K** keep
  (anything not listed); the Basic column has no **C** (that is the Clean Descriptors
  Option). Patient ID (Z/D) gets D: a pseudonym keyed like the UIDs, the same for one
  patient throughout a share. Where the table allows a choice the one that keeps any IOD conformant without
  knowing each attribute's type is taken: Z/D and X/Z and X/Z/D → Z, X/D → D.
- **U** replaces a UID by ``2.25.<n>`` with *n* the first 128 bits of
  HMAC-SHA-256(key, UID) (PS3.5 §B.2: a UUID-derived UID): deterministic for one key, so
  the same original gives the same replacement in every file, every response and every
  reference (Referenced SOP Instance UID inside sequences), and no mapping is stored.
  X/Z/U* (Referenced Image Sequence, Source Image Sequence) keeps the sequence with its
  UIDs replaced, so references still hold.
- Private attributes are removed (E.3.10 is not applied), as are curves and overlays.
- Patient Identity Removed (0012,0062) becomes YES and De-identification Method (0012,0063)
  and its Code Sequence (0012,0064) name the profile, code 113100 of DCM (PS3.15 §E.1.1).

Pixel data is not touched: Burned In Annotation (0028,0301) says whether it may still
show identity, and :func:`burned_in_risk` tells when a warning is due.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import warnings
from collections.abc import Iterable
from enum import Enum
from io import BytesIO
from typing import Any

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


class Action(Enum):
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    #: Keep the element, replacing the UIDs within it (X/Z/U* sequences).
    UIDS_WITHIN = "U*"


PATIENT_ID = 0x00100020
_UID_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)+")


def _exact(entries: list[tuple[int, ...]], action: Action) -> dict[int, Action]:
    return {(e[0] << 16) | e[1]: action for e in entries if len(e) == 2}


ACTIONS: dict[int, Action] = {
    **_exact(table.D_TAGS, Action.DUMMY),
    **_exact(table.Z_TAGS, Action.EMPTY),
    **_exact(table.X_TAGS, Action.REMOVE),
    **_exact(table.U_TAGS, Action.UID),
    **_exact(table.Z_D_TAGS, Action.EMPTY),
    **_exact(table.X_Z_TAGS, Action.EMPTY),
    **_exact(table.X_D_TAGS, Action.DUMMY),
    **_exact(table.X_Z_D_TAGS, Action.EMPTY),
    **_exact(table.X_Z_U_STAR_TAGS, Action.UIDS_WITHIN),
    # Z/D: D, a keyed pseudonym, because a DICOMDIR's PATIENT record needs a Patient ID
    # (PS3.3 §F.5, Type 1) and a viewer groups studies by it.
    PATIENT_ID: Action.DUMMY,
}
#: Repeating groups (curves 50xx, overlays 60xx): (tag, mask), all removed (X).
MASKED: list[tuple[int, int]] = [
    ((e[0] << 16) | e[1], (e[2] << 16) | e[3]) for e in table.X_TAGS if len(e) == 4
]
#: PS3.15 §E.1.1: how a de-identified instance names its De-identification Method.
METHOD = "Basic Application Confidentiality Profile (PS3.15 E.1.1)"
PIXEL_DATA = 0x7FE00010

_TEXT = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
#: Dummy values by VR (D): valid for the VR, and obviously not real.
_DUMMY: dict[str, Any] = {
    "PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "LT": "ANONYMOUS", "ST": "ANONYMOUS",
    "UT": "ANONYMOUS", "UC": "ANONYMOUS", "CS": "ANONYMOUS", "AE": "ANONYMOUS", "UR": "",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y", "DS": "0", "IS": "0",
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0,
}  # fmt: skip


def action(tag: int) -> Action | None:
    """What the profile does to ``tag`` (None: keep).

    >>> action(0x00100010), action(0x00100020), action(0x0020000D), action(0x00280010)
    (<Action.EMPTY: 'Z'>, <Action.DUMMY: 'D'>, <Action.UID: 'U'>, None)
    >>> action(0x00100030), action(0x60023000), action(0x00091001)
    (<Action.EMPTY: 'Z'>, <Action.REMOVE: 'X'>, <Action.REMOVE: 'X'>)
    """
    if tag in ACTIONS:
        return ACTIONS[tag]
    if (tag >> 16) % 2 == 1:  # private (PS3.5 §7.8)
        return Action.REMOVE
    for value, mask in MASKED:
        if tag & mask == value:
            return Action.REMOVE
    return None


def keeps(tag: int) -> bool:
    """Whether the profile keeps an attribute's value as it is (a query on any other one
    cannot be answered truthfully from a de-identified copy)."""
    return action(tag) is None


def remap_uid(key: bytes, uid: str) -> str:
    """The replacement of ``uid`` under ``key``: ``2.25.`` and 128 bits of its HMAC.

    >>> a = remap_uid(b"k", "1.2.3")
    >>> a == remap_uid(b"k", "1.2.3"), a == remap_uid(b"other", "1.2.3"), a.startswith("2.25.")
    (True, False, True)
    >>> len(a) <= 64
    True
    """
    digest = hmac.new(key, uid.strip("\0 ").encode("ascii", "replace"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def pseudonym(key: bytes, patient_id: str) -> str:
    """The dummy Patient ID standing for ``patient_id`` under ``key`` (an LO of 16 chars).

    >>> pseudonym(b"k", "123") == pseudonym(b"k", "123") != pseudonym(b"k", "124")
    True
    """
    digest = hmac.new(key, b"patient\0" + patient_id.encode("utf-8", "replace"), hashlib.sha256)
    return "ANON" + digest.hexdigest()[:12].upper()


class Pseudonyms:
    """The replacement UIDs of a set of UIDs (a share's), both ways.

    >>> p = Pseudonyms(b"k", ["1.2.3"])
    >>> p.originals[remap_uid(b"k", "1.2.3")]
    '1.2.3'
    >>> p.hide("/studies/1.2.3/series") == f"/studies/{p.replacements['1.2.3']}/series"
    True
    """

    def __init__(self, key: bytes, uids: Iterable[str]) -> None:
        self.key = key
        self.replacements = {uid: remap_uid(key, uid) for uid in uids}
        self.originals = {new: old for old, new in self.replacements.items()}

    def hide(self, text: str) -> str:
        """``text`` with every one of the original UIDs replaced (in URLs, messages)."""
        return _UID_TEXT.sub(lambda m: self.replacements.get(m.group(), m.group()), text)


def _method_codes() -> Sequence:
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    return Sequence([code])


def deidentify(ds: Dataset, key: bytes) -> None:
    """De-identify ``ds`` in place (its file meta too); Pixel Data is left as it is.

    >>> ds = Dataset()
    >>> ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "123", "19700101"
    >>> ds.SOPInstanceUID, ds.Rows, ds.InstitutionName = "1.2.3", 2, "General"
    >>> ref = Dataset(); ref.ReferencedSOPInstanceUID = "1.2.3"
    >>> ds.ReferencedImageSequence = [ref]
    >>> ds.add_new(0x00091001, "LO", "private")
    >>> deidentify(ds, b"k")
    >>> str(ds.PatientName), ds.PatientBirthDate, ds.InstitutionName, ds.Rows
    ('', '', '', 2)
    >>> ds.PatientID == pseudonym(b"k", "123")
    True
    >>> referenced = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    >>> ds.SOPInstanceUID == referenced == remap_uid(b"k", "1.2.3")
    True
    >>> 0x00091001 in ds, ds.PatientIdentityRemoved, ds.DeidentificationMethodCodeSequence[0].CodeValue
    (False, 'YES', '113100')
    """
    _walk(ds, key, within_uids=False)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = remap_uid(key, str(meta.MediaStorageSOPInstanceUID))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    ds.DeidentificationMethodCodeSequence = _method_codes()


def _walk(ds: Dataset, key: bytes, within_uids: bool) -> None:
    for elem in list(ds):
        tag = int(elem.tag)
        if tag == PIXEL_DATA:
            continue
        todo = action(tag)
        if within_uids and todo is None and elem.VR == "UI":
            todo = Action.UID
        if todo is Action.REMOVE:
            del ds[elem.tag]
        elif todo is Action.EMPTY:
            elem.value = _empty(elem.VR)
        elif todo is Action.UID and elem.VR == "UI":
            elem.value = _remap_values(key, elem.value)
        elif todo is Action.UID:
            elem.value = _empty(elem.VR)  # a UID attribute of a wrong VR: nothing to map, so nothing kept
        elif tag == PATIENT_ID:
            elem.value = pseudonym(key, str(elem.value or ""))
        elif todo is Action.DUMMY and elem.VR != "SQ":
            elem.value = _DUMMY.get(elem.VR, _empty(elem.VR))
        elif elem.VR == "SQ":  # kept, D or U*: what is inside is de-identified too
            inner = within_uids or todo is Action.UIDS_WITHIN
            for item in elem.value:
                _walk(item, key, inner)


def _empty(vr: str) -> Any:
    if vr == "SQ":
        return Sequence()
    return "" if vr in _TEXT else None


def _remap_values(key: bytes, value: Any) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, str):
        return remap_uid(key, value)
    return [remap_uid(key, str(v)) for v in value]


# --- DICOM JSON (PS3.18 Annex F) ----------------------------------------------------------


def deidentify_json(ds: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The DICOM JSON ``ds`` de-identified the same way as :func:`deidentify`.

    >>> out = deidentify_json({"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe"}]},
    ...     "0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00280010": {"vr": "US", "Value": [2]}}, b"k")
    >>> out["00100010"], out["0020000D"]["Value"] == [remap_uid(b"k", "1.2.3")], out["00280010"]
    ({'vr': 'PN'}, True, {'vr': 'US', 'Value': [2]})
    >>> out["00120062"]["Value"]
    ['YES']
    """
    out = _walk_json(ds, key, within_uids=False)
    out["00120062"] = {"vr": "CS", "Value": ["YES"]}
    out["00120063"] = {"vr": "LO", "Value": [METHOD]}
    code = {
        "00080100": {"vr": "SH", "Value": ["113100"]},
        "00080102": {"vr": "SH", "Value": ["DCM"]},
        "00080104": {"vr": "LO", "Value": ["Basic Application Confidentiality Profile"]},
    }
    out["00120064"] = {"vr": "SQ", "Value": [code]}
    return dict(sorted(out.items()))


def _walk_json(ds: dict[str, Any], key: bytes, within_uids: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, elem in ds.items():
        tag = int(name, 16)
        vr = elem.get("vr", "UN")
        todo = action(tag)
        if within_uids and todo is None and vr == "UI":
            todo = Action.UID
        if tag == PIXEL_DATA or (todo is None and vr != "SQ"):
            out[name] = elem
        elif todo is Action.REMOVE:
            continue
        elif todo is Action.EMPTY or (todo is Action.UID and vr != "UI"):
            out[name] = {"vr": vr}
        elif todo is Action.UID:
            out[name] = {"vr": vr, "Value": [remap_uid(key, str(v)) for v in elem.get("Value", [])]}
        elif tag == PATIENT_ID:
            out[name] = {"vr": vr, "Value": [pseudonym(key, str(elem.get("Value", [""])[0] or ""))]}
        elif todo is Action.DUMMY and vr != "SQ":
            dummy = _DUMMY.get(vr)
            value = {"Alphabetic": dummy} if vr == "PN" else dummy
            out[name] = {"vr": vr} if dummy is None or dummy == "" else {"vr": vr, "Value": [value]}
        else:  # a sequence kept, D or U*
            inner = within_uids or todo is Action.UIDS_WITHIN
            items = [_walk_json(item, key, inner) for item in elem.get("Value", [])]
            out[name] = {"vr": "SQ", "Value": items}
    return out


def burned_in_risk(value: str | None) -> bool:
    """Whether an instance's Burned In Annotation (0028,0301) leaves identity possibly in
    its pixels: YES, or absent or unknown — only NO is reassuring (PS3.15 §E.1.1 leaves
    pixel data to the user).

    >>> burned_in_risk("NO"), burned_in_risk("YES"), burned_in_risk(None), burned_in_risk("")
    (False, True, True, True)
    """
    return (value or "").strip().upper() != "NO"


# --- Part 10 files, header only (PS3.10 §7) ------------------------------------------------

#: The tags of the pixel data elements (Pixel, Float Pixel, Double Float Pixel Data), as
#: they appear in little endian encodings: where a de-identified header ends.
_PIXEL_TAGS = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")


def rewrite_header(prefix: bytes, key: bytes, complete: bool) -> tuple[bytes, int] | None:
    """The de-identified header of a Part 10 file whose first bytes are ``prefix``, and
    how many bytes of ``prefix`` it replaces (the rest, from the pixel data element on, goes
    as it is); None when more bytes are needed. With ``complete`` (``prefix`` is the whole
    file, e.g. an instance without pixel data, or a deflated one) the whole file is
    rewritten. Raises what pydicom raises for a file it cannot read.

    >>> from io import BytesIO
    >>> from pydicom import dcmread
    >>> from pydicom.data import get_testdata_file
    >>> from pathlib import Path
    >>> data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    >>> rewrite_header(data[:1000], b"k", False) is None
    True
    >>> header, used = rewrite_header(data, b"k", False)
    >>> out = dcmread(BytesIO(header + data[used:]))
    >>> str(out.PatientName), out.PixelData == dcmread(BytesIO(data)).PixelData
    ('', True)
    """
    if not complete and not any(tag in prefix for tag in _PIXEL_TAGS):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a prefix cut inside an element is retried with more
        try:
            fp = BytesIO(prefix)
            ds = dcmread(fp, stop_before_pixels=not complete)
        except Exception:
            if complete:
                raise
            return None
    used = fp.tell() if not complete else len(prefix)
    if not complete and prefix[used : used + 4] not in _PIXEL_TAGS:
        return None  # the tag's bytes were inside a value: read on
    deidentify(ds, key)
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), used


def pixel_tag_at(data: bytes | bytearray, start: int) -> int:
    """Where a pixel data tag's bytes first occur in ``data`` from ``start`` (-1: nowhere):
    where a header may end, so that only new bytes are searched as they arrive.

    >>> data = b"ab" + bytes.fromhex("e07f1000")
    >>> pixel_tag_at(data, 0), pixel_tag_at(data, 3)
    (2, -1)
    """
    found = [i for i in (data.find(tag, start) for tag in _PIXEL_TAGS) if i >= 0]
    return min(found, default=-1)


def is_deflated(transfer_syntax: str) -> bool:
    """Deflated data sets (PS3.5 §A.5) cannot be cut at their pixel data: rewritten whole."""
    return transfer_syntax in {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}


#: A DICOMDIR's records need values the profile empties (PS3.3 §F.5: STUDY's Study Date,
#: Study Time and Study ID are Type 1): the directory gets dummies (D) for them.
_DIRECTORY_DUMMIES = {"StudyDate": "19000101", "StudyTime": "000000", "StudyID": "ANONYMOUS"}


def fill_for_directory(ds: Dataset) -> None:
    """Dummy values, in a de-identified header, where a directory record needs one.

    >>> ds = Dataset(); ds.StudyDate = ""; fill_for_directory(ds); ds.StudyDate, ds.StudyID
    ('19000101', 'ANONYMOUS')
    """
    for keyword, dummy in _DIRECTORY_DUMMIES.items():
        if not ds.get(keyword):
            setattr(ds, keyword, dummy)
