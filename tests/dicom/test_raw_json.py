"""DICOM JSON made from encoded bytes (app.dicom.raw_json) is exactly pydicom's."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom.data
import pytest

from app.dicom import raw_json
from app.dicom.header import HeaderError, _dataset_json, read_instance, to_dicom_json
from app.dicom.indexing import index_record
from tests.samples import SAMPLE_FILES, make_sample

# Every Part 10 file pydicom's wheel ships for its own tests (none downloaded): character
# sets, implicit and big endian syntaxes, odd values, sequences, private elements.
FILES = sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm"), key=lambda p: p.name)


def _both(path: Path) -> tuple[dict, dict, int] | None:
    try:
        with path.open("rb") as file:
            parsed = read_instance(file)
            fast = to_dicom_json(parsed)
            # The same data set through pydicom's conversion alone: the rendered elements
            # are still raw in it, and converted now.
            reference = _dataset_json(parsed.dataset, "", parsed.bulk)
    except HeaderError:
        return None
    if parsed.pixel is not None:
        reference.pop(f"{parsed.pixel.tag:08X}", None)
        fast.pop(f"{parsed.pixel.tag:08X}", None)
    return fast, reference, len(parsed.rendered)


# One file is explicit VR in name only: pydicom says so, and reads it as implicit.
@pytest.mark.filterwarnings("ignore:Expected explicit VR")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_rendered_elements_equal_pydicoms(path: Path):
    both = _both(path)
    if both is None:
        pytest.skip("not an instance the archive accepts")
    fast, reference, _ = both
    assert json.dumps(fast) == json.dumps(reference)


def test_most_of_an_ordinary_header_is_rendered(tmp_path: Path):
    for name in SAMPLE_FILES:
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(make_sample(name).data)
        both = _both(path)
        assert both is not None
        fast, reference, rendered = both
        assert json.dumps(fast) == json.dumps(reference)
        # Big endian (retired, PS3.5 §A.3) is left to pydicom entirely.
        assert rendered >= (0.8 * len(reference) if name != "bigendian" else 0), name


@pytest.mark.parametrize(
    ("vr", "value", "expected"),
    [
        ("DS", b"1.5\\-2e3 ", [1.5, -2000.0]),
        ("IS", b" 12\\-3", [12, -3]),
        ("CS", b"ORIGINAL\\PRIMARY ", ["ORIGINAL", "PRIMARY"]),
        ("UI", b"1.2.3\x00", ["1.2.3"]),
        ("US", b"\x01\x00\x02\x00", [1, 2]),
        ("AT", b"\x10\x00\x20\x00", ["00100020"]),
        ("PN", b"Doe^Jane ", [{"Alphabetic": "Doe^Jane"}]),
    ],
)
def test_plain_values(vr: str, value: bytes, expected: list):
    assert raw_json.element_json(vr, value, "latin_1") == {"vr": vr, "Value": expected}


@pytest.mark.parametrize(
    ("vr", "value", "codec"),
    [
        ("DS", b"nan", "latin_1"),  # not a decimal string: pydicom decides
        ("DS", b"1,5", "latin_1"),
        ("CS", b"A\\\\B", "latin_1"),  # an empty value among several
        ("PN", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", "latin_1"),  # ideographic group
        ("LO", b"caf\xc3\xa9", None),  # a character set not handled here
        ("LO", b"\xff\xfe", "utf_8"),  # not UTF-8
        ("SQ", b"\xfe\xff\x00\xe0", "latin_1"),
        ("UN", b"abcd", "latin_1"),
        ("FL", b"\x00\x00\xc0\x7f", "latin_1"),  # NaN
    ],
)
def test_anything_else_is_left_to_pydicom(vr: str, value: bytes, codec: str | None):
    assert raw_json.element_json(vr, value, codec) is None


@pytest.mark.filterwarnings("ignore:Expected explicit VR")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_indexing_from_rendered_elements_equals_pydicoms(path: Path):
    try:
        with path.open("rb") as file:
            parsed = read_instance(file)
    except HeaderError:
        pytest.skip("not an instance the archive accepts")
    from_rendered = index_record(parsed.dataset, parsed.rendered)
    # Then through pydicom's values alone: the rendered elements are converted now.
    assert from_rendered == index_record(parsed.dataset)
