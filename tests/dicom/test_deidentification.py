"""The Basic Application Level Confidentiality Profile (PS3.15 Annex E) as applied to files
and to DICOM JSON, and the streamed rewrite of a file's header."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.dicom.deidentification import Action, action, deidentify, deidentify_json, remap_uid
from app.services.deidentified import deidentified

KEY = b"a share's key"


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        # Rows of PS3.15 Table E.1-1, Basic Profile column (and the choice taken where it offers one).
        ("PatientName", Action.EMPTY),
        ("PatientBirthDate", Action.EMPTY),
        ("PatientAddress", Action.REMOVE),
        ("OtherPatientIDsSequence", Action.REMOVE),
        ("AccessionNumber", Action.EMPTY),
        ("ReferringPhysicianName", Action.EMPTY),
        ("StudyDate", Action.EMPTY),
        ("StudyID", Action.EMPTY),
        ("InstitutionName", Action.EMPTY),  # X/Z/D
        ("ProtocolName", Action.DUMMY),  # X/D
        ("SeriesDescription", Action.REMOVE),
        ("StudyInstanceUID", Action.UID),
        ("FrameOfReferenceUID", Action.UID),
        ("ReferencedSOPInstanceUID", Action.UID),
        ("ReferencedImageSequence", Action.UIDS_WITHIN),  # X/Z/U*
        ("SOPClassUID", None),
        ("Modality", None),
        ("BurnedInAnnotation", None),
    ],
)
def test_table_rows(keyword: str, expected: Action | None):
    assert action(pydicom.datadict.tag_for_keyword(keyword)) is expected


def _plain(ds: dict[str, Any]) -> dict[str, Any]:
    """DICOM JSON without binary values (encoded differently by each path)."""
    return {tag: _plain_items(elem) for tag, elem in ds.items() if elem["vr"] not in ("OB", "OW", "OF", "UN")}


def _plain_items(elem: dict[str, Any]) -> dict[str, Any]:
    if elem["vr"] == "SQ":
        return {"vr": "SQ", "Value": [_plain(item) for item in elem.get("Value", [])]}
    return elem


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "test-SR.dcm"])
def test_files_and_json_are_deidentified_alike(name: str):
    original = pydicom.dcmread(get_testdata_file(name))
    as_json = deidentify_json(original.to_json_dict(), KEY)
    copy = pydicom.dcmread(get_testdata_file(name))
    deidentify(copy, KEY)
    assert _plain(copy.to_json_dict()) == _plain(as_json)
    assert copy.StudyInstanceUID == remap_uid(KEY, original.StudyInstanceUID)
    assert "PatientName" not in copy or str(copy.PatientName) == ""


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _rewritten(data: bytes, size: int, syntax: str) -> bytes:
    return b"".join([chunk async for chunk in deidentified(_chunks(data, size), KEY, syntax)])


@pytest.mark.parametrize(
    "data",
    [
        Path(get_testdata_file(n)).read_bytes()
        for n in ("CT_small.dcm", "JPEG2000.dcm", "test-SR.dcm", "image_dfl.dcm")
    ],
    ids=["native", "encapsulated", "no-pixels", "deflated"],
)
async def test_the_streamed_rewrite_does_not_depend_on_chunking(data: bytes):
    original = pydicom.dcmread(io.BytesIO(data))
    syntax = str(original.file_meta.TransferSyntaxUID)
    whole = await _rewritten(data, len(data), syntax)
    for size in (5, 97, 4096):
        assert await _rewritten(data, size, syntax) == whole, size
    copy = pydicom.dcmread(io.BytesIO(whole))
    assert copy.PatientIdentityRemoved == "YES"
    assert copy.SOPInstanceUID == remap_uid(KEY, original.SOPInstanceUID)
    assert copy.file_meta.TransferSyntaxUID == syntax
    if "PixelData" in original:
        assert copy.PixelData == original.PixelData
