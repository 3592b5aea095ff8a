from __future__ import annotations

import base64
import hashlib
import io
import itertools
import random
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_fragments, generate_frames, parse_basic_offsets
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from app.dicom.header import (
    BULK_DATA_THRESHOLD,
    BULK_PLACEHOLDER,
    BulkLocation,
    HeaderError,
    ParsedInstance,
    read_instance,
    to_dicom_json,
)
from tests.samples import read_header

# rtdose.dcm holds a UID with a leading-zero component; pydicom warns when reading it.
RTDOSE = pytest.param("rtdose.dcm", marks=pytest.mark.filterwarnings("ignore:Invalid value for VR UI"))
NATIVE = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "SC_rgb.dcm",
    "emri_small.dcm",
    "ExplVR_BigEnd.dcm",
    RTDOSE,  # multi-frame, Implicit VR
]
ENCAPSULATED = [
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "examples_ybr_color.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
]


def sample(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def at(data: bytes, offset: int, length: int) -> bytes:
    return data[offset : offset + length]


def element_at(ds: Dataset, path: str) -> Any:
    """The value at a bulk path such as ``00540016/1/00091010``."""
    steps = path.split("/")
    for tag, index in zip(steps[:-1:2], steps[1:-1:2], strict=True):
        ds = ds[int(tag, 16)].value[int(index)]
    return ds[int(steps[-1], 16)]


def assert_json_matches_pydicom(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> None:
    """Equal to pydicom's JSON, except that bulk values are placeholders at their paths."""
    assert ours.keys() == theirs.keys(), prefix
    for key, mine in ours.items():
        path, other = prefix + key, theirs[key]
        if "BulkDataURI" in mine:
            assert mine == {"vr": other["vr"], "BulkDataURI": BULK_PLACEHOLDER + path}
            inline = base64.b64decode(other["InlineBinary"])
            assert path == "7FE00010" or len(inline) > BULK_DATA_THRESHOLD
        elif mine["vr"] == "SQ":
            for index, (a, b) in enumerate(zip(mine["Value"], other["Value"], strict=True)):
                assert_json_matches_pydicom(a, b, f"{path}/{index}/")
        else:
            assert mine == other, path


def pydicom_json(path: Path) -> dict[str, Any]:
    """pydicom's own DICOM JSON, every binary value inline, Pixel Data included."""
    result = pydicom.dcmread(path, stop_before_pixels=True).to_json_dict(bulk_data_threshold=1 << 40)
    full = pydicom.dcmread(path)
    for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010):
        if tag in full:
            result[f"{tag:08X}"] = full[tag].to_json_dict(None, 1 << 40)
    return result


def assert_locations(parsed: ParsedInstance, path: Path) -> None:
    data, full = path.read_bytes(), pydicom.dcmread(path)
    for bulk_path, (offset, length) in parsed.bulk.items():
        if length is not None:
            assert at(data, offset, length) == element_at(full, bulk_path).value, bulk_path


# -- Pixel Data --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NATIVE)
def test_native_pixel_data(name: str) -> None:
    path = sample(name)
    parsed = read_header(path)
    full = pydicom.dcmread(path)
    pixel = parsed.pixel
    assert pixel is not None and not pixel.encapsulated and pixel.value_length is not None
    assert at(path.read_bytes(), pixel.value_offset, pixel.value_length) == full.PixelData
    assert (pixel.tag, pixel.fragments, pixel.basic_offset_table) == (0x7FE00010, [], [])
    assert pixel.vr == ("OW" if full.original_encoding[0] else full["PixelData"].VR)
    assert parsed.bulk["7FE00010"] == BulkLocation(pixel.value_offset, pixel.value_length)
    assert parsed.transfer_syntax_uid == full.file_meta.TransferSyntaxUID
    assert (parsed.sop_class_uid, parsed.sop_instance_uid) == (full.SOPClassUID, full.SOPInstanceUID)
    assert (parsed.study_instance_uid, parsed.series_instance_uid) == (
        full.StudyInstanceUID,
        full.SeriesInstanceUID,
    )
    assert "PixelData" not in parsed.dataset


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_encapsulated_pixel_data(name: str) -> None:
    path = sample(name)
    parsed = read_header(path)
    full = pydicom.dcmread(path)
    pixel = parsed.pixel
    assert pixel is not None and pixel.encapsulated and pixel.value_length is None
    buffer = io.BytesIO(full.PixelData)
    assert pixel.basic_offset_table == parse_basic_offsets(buffer)
    data = path.read_bytes()
    fragments = [at(data, offset, length) for offset, length in pixel.fragments]
    assert fragments == list(generate_fragments(buffer))
    frames = generate_frames(full.PixelData, number_of_frames=full.get("NumberOfFrames", 1))
    assert b"".join(fragments) == b"".join(frames)
    assert pixel.vr == full["PixelData"].VR
    assert parsed.bulk["7FE00010"] == BulkLocation(pixel.value_offset, None)


def test_multiframe_basic_offset_table() -> None:
    pixel = read_header(sample("examples_ybr_color.dcm")).pixel
    assert pixel is not None and len(pixel.fragments) == len(pixel.basic_offset_table) == 30
    # Each entry is the distance from the first fragment's item tag to the frame's (PS3.5 §A.4).
    first = pixel.fragments[0][0]
    assert [offset - first for offset, _ in pixel.fragments] == pixel.basic_offset_table


def test_pixel_data_need_not_be_last() -> None:
    path = sample("CT_small.dcm")  # (FFFC,FFFC) Data Set Trailing Padding follows the Pixel Data
    parsed = read_header(path)
    assert parsed.pixel is not None and parsed.pixel.value_length is not None
    assert parsed.pixel.value_offset + parsed.pixel.value_length < path.stat().st_size
    assert 0xFFFCFFFC not in parsed.dataset


def test_no_pixel_data() -> None:
    path = sample("waveform_ecg.dcm")
    parsed = read_header(path)
    assert parsed.pixel is None
    assert sorted(parsed.bulk) == ["54000100/0/54001010", "54000100/1/54001010"]
    assert_locations(parsed, path)


def test_float_pixel_data(tmp_path: Path) -> None:
    ds = minimal_dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated = 2, 2, 1, 32
    ds.FloatPixelData = bytes(range(16))
    path = save(ds, tmp_path / "float.dcm", ExplicitVRLittleEndian)
    pixel = read_header(path).pixel
    assert pixel is not None and (pixel.tag, pixel.vr, pixel.value_length) == (0x7FE00008, "OF", 16)
    assert at(path.read_bytes(), pixel.value_offset, 16) == bytes(range(16))


# -- DICOM JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*NATIVE, *ENCAPSULATED, "waveform_ecg.dcm"])
def test_dicom_json_matches_pydicom(name: str) -> None:
    path = sample(name)
    parsed = read_header(path)
    ours = to_dicom_json(parsed)
    assert_json_matches_pydicom(ours, pydicom_json(path))
    assert_locations(parsed, path)
    placeholders = {k for k, v in ours.items() if "BulkDataURI" in v}
    assert placeholders == {k for k in parsed.bulk if "/" not in k}


def test_private_bulk_value_stays_unread() -> None:
    path = sample("CT_small.dcm")  # (0043,1029) is a 2068-byte private OB
    parsed = read_header(path)
    raw = parsed.dataset.get_item(0x00431029, keep_deferred=True)
    assert isinstance(raw, RawDataElement) and raw.value is None
    assert to_dicom_json(parsed)["00431029"] == {"vr": "OB", "BulkDataURI": "@bulk/00431029"}
    assert at(path.read_bytes(), *parsed.bulk["00431029"]) == pydicom.dcmread(path)[0x00431029].value


def test_json_needs_no_file(tmp_path: Path) -> None:
    path = tmp_path / "moved.dcm"
    path.write_bytes(sample("CT_small.dcm").read_bytes())
    parsed = read_header(path)
    path.unlink()
    assert to_dicom_json(parsed)["7FE00010"] == {"vr": "OW", "BulkDataURI": "@bulk/7FE00010"}


def test_deflated() -> None:
    """Offsets into inflated data cannot address the stored bytes: no layout, no bulk
    locations, binary values inline."""
    path = sample("image_dfl.dcm")
    parsed = read_header(path)
    assert parsed.deflated and parsed.pixel is None and parsed.bulk == {}
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert parsed.sop_instance_uid == header.SOPInstanceUID
    assert to_dicom_json(parsed) == header.to_json_dict(bulk_data_threshold=1 << 40)


def minimal_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in range(3))
    ds.PatientName = "Doe^Jane"
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str) -> Path:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    # Taken from the data set when it has them; the missing-UID tests remove them.
    meta.MediaStorageSOPClassUID = UID(ds.get("SOPClassUID") or "1.2.3")
    meta.MediaStorageSOPInstanceUID = UID(ds.get("SOPInstanceUID") or "1.2.3.4")
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


ENCODINGS = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]


def nested_dataset(undefined: bool) -> Dataset:
    """A sequence holding a >1 KiB OB, a 1 KiB one (inline) and a nested sequence with a
    >1 KiB OW; a large top-level private OB; native Pixel Data."""
    deeper = Dataset()
    deeper.add_new(0x00090010, "LO", "FILMLESS")
    deeper.add_new(0x00091020, "OW", b"\x05\x06" * 700)
    inner = Dataset()
    inner.add_new(0x00090010, "LO", "FILMLESS")
    inner.add_new(0x00091010, "OB", bytes(range(256)) * 8)
    inner.add_new(0x00091012, "OB", b"\x07" * BULK_DATA_THRESHOLD)
    inner.add_new(0x00091030, "SQ", Sequence([deeper]))
    first = Dataset()
    first.RadiopharmaceuticalStartDateTime = "20240101120000"
    ds = minimal_dataset()
    ds.RadiopharmaceuticalInformationSequence = Sequence([first, inner])
    ds.add_new(0x00290010, "LO", "FILMLESS")
    ds.add_new(0x00291010, "OB", b"\xaa" * 5000)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored = 4, 4, 1, 16, 16
    ds.HighBit, ds.PixelRepresentation, ds.PhotometricInterpretation = 15, 0, "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    for sequence in (ds["RadiopharmaceuticalInformationSequence"], inner[0x00091030]):
        sequence.is_undefined_length = undefined
        for item in sequence.value:
            item.is_undefined_length_sequence_item = undefined
    return ds


@pytest.mark.parametrize(
    ("transfer_syntax", "undefined"),
    list(itertools.product(ENCODINGS, [False, True])),
)
def test_nested_bulk_paths(tmp_path: Path, transfer_syntax: str, undefined: bool) -> None:
    path = save(nested_dataset(undefined), tmp_path / "nested.dcm", transfer_syntax)
    parsed = read_header(path)
    ours = to_dicom_json(parsed)
    assert_json_matches_pydicom(ours, pydicom_json(path))
    assert_locations(parsed, path)
    # In Implicit VR a private defined-length sequence cannot be told from UN bytes.
    opaque = transfer_syntax == ImplicitVRLittleEndian and not undefined
    deepest = "00540016/1/00091030" if opaque else "00540016/1/00091030/0/00091020"
    assert sorted(parsed.bulk) == ["00291010", "00540016/1/00091010", deepest, "7FE00010"]
    item = ours["00540016"]["Value"][1]
    vr = "UN" if transfer_syntax == ImplicitVRLittleEndian else "OB"  # private: no dictionary VR
    assert item["00091010"] == {"vr": vr, "BulkDataURI": "@bulk/00540016/1/00091010"}
    assert "InlineBinary" in item["00091012"]
    if not opaque:
        assert item["00091030"]["Value"][0]["00091020"]["BulkDataURI"] == "@bulk/" + deepest


# -- errors ------------------------------------------------------------------------------


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bad.dcm"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "DICM"),
        (hashlib.shake_256(b"garbage").digest(4096), "DICM"),
        (sample("no_meta.dcm").read_bytes(), "DICM"),
        (bytes(128) + b"DICM", "File Meta"),
        (bytes(128) + b"DICM" + sample("no_meta.dcm").read_bytes(), "File Meta"),
        (sample("meta_missing_tsyntax.dcm").read_bytes(), "Transfer Syntax"),
        (sample("CT_small.dcm").read_bytes()[:20000], "truncated"),  # in the Pixel Data
        (sample("CT_small.dcm").read_bytes()[:6290], "truncated"),  # in its header
        (sample("CT_small.dcm").read_bytes()[:4000], "truncated"),  # in a deferred value
        (sample("CT_small.dcm").read_bytes()[:1203], "truncated"),  # in an element header
        (sample("JPEG2000.dcm").read_bytes()[:3200], "truncated"),  # in a fragment
        (sample("JPEG2000.dcm").read_bytes()[:-8], "truncated"),  # no sequence delimiter
        (sample("MR_small_implicit.dcm").read_bytes()[:1502], "truncated"),  # just before it
    ],
)
def test_unusable_files(tmp_path: Path, data: bytes, reason: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about what it reads of a broken file
        with pytest.raises(HeaderError, match=reason):
            read_header(write(tmp_path, data))


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("StudyInstanceUID", None), ("SeriesInstanceUID", ""), ("SOPInstanceUID", None), ("SOPClassUID", None)],
)
def test_missing_uid(tmp_path: Path, keyword: str, value: str | None) -> None:
    ds = minimal_dataset()
    if value is None:
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)
    path = save(ds, tmp_path / "uid.dcm", ExplicitVRLittleEndian)
    with pytest.raises(HeaderError, match=keyword):
        read_header(path)


def test_garbage_after_the_prefix(tmp_path: Path) -> None:
    head = sample("CT_small.dcm").read_bytes()[:400]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HeaderError):
            read_header(write(tmp_path, head + hashlib.shake_256(b"garbage").digest(2000)))


def test_corrupted_files_raise_only_header_error(tmp_path: Path) -> None:
    rng = random.Random(11)  # noqa: S311 (reproducible corruption, not cryptography)
    for name in ("CT_small.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        original = sample(name).read_bytes()
        for _ in range(40):
            data = bytearray(original[: rng.randrange(140, len(original) + 1)])
            for _ in range(4):
                data[rng.randrange(132, len(data))] = rng.randrange(256)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    read_header(write(tmp_path, bytes(data)))
                except HeaderError:
                    pass


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm"])
def test_reads_from_the_reader_it_is_handed(name: str) -> None:
    # The parser does no I/O of its own: bytes in memory parse as the file on disk does.
    path = sample(name)
    in_memory = read_instance(io.BytesIO(path.read_bytes()))
    on_disk = read_header(path)
    assert in_memory.pixel == on_disk.pixel and in_memory.pixel is not None
    assert in_memory.bulk == on_disk.bulk
    assert to_dicom_json(in_memory) == to_dicom_json(on_disk)


def test_sequences_nested_too_deep_are_a_header_error(tmp_path: Path) -> None:
    # 5,000 sequences of undefined length, each in an item of the one above (PS3.5 §7.5.2):
    # deeper than pydicom's recursive reading can go.
    sq = b"\x08\x00\x06\x00SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    closers = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    original = sample("CT_small.dcm").read_bytes()
    at = original.index(b"\x08\x00\x08\x00CS")  # Image Type, which follows (0008,0006)
    data = original[:at] + sq * 5000 + closers * 5000 + original[at:]
    with pytest.raises(HeaderError, match="RecursionError"):
        read_header(write(tmp_path, data))


@pytest.mark.parametrize("keyword", ["PatientID", "IssuerOfPatientID", "AccessionNumber", "Modality"])
def test_keys_too_long_to_index_are_a_header_error(tmp_path: Path, keyword: str) -> None:
    ds = minimal_dataset()
    setattr(ds, keyword, "A" * 64)  # over its VR's maximum for some, still indexed
    read_header(save(ds, tmp_path / "long.dcm", ExplicitVRLittleEndian))
    ds[keyword].VR = "UT"  # a value no index entry could hold, as a careless sender writes it
    ds[keyword].value = "A" * 70_000
    with pytest.raises(HeaderError, match=keyword):
        read_header(save(ds, tmp_path / "huge.dcm", ExplicitVRLittleEndian))
