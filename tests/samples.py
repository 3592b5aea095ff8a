"""Test instances: pydicom's bundled files, re-identified with fresh UIDs so every test
stores its own, and multipart bodies built from them."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app.dicom.header import ParsedInstance, read_instance

#: Bundled files covering the shapes the archive must round-trip.
SAMPLE_FILES = {
    "ct": "CT_small.dcm",  # native 16-bit
    "mr": "MR_small.dcm",  # native 16-bit, another modality
    "multiframe": "rtdose.dcm",  # native, 15 frames
    "jpeg": "examples_ybr_color.dcm",  # JPEG baseline, 30 frames, YBR
    "rgb": "SC_rgb.dcm",  # native RGB
    "jpeg2000": "JPEG2000.dcm",  # encapsulated, single frame
    "rle": "MR_small_RLE.dcm",  # encapsulated RLE
    "bigendian": "MR_small_bigendian.dcm",  # explicit VR big endian
}


def sample_path(name: str) -> Path:
    found = get_testdata_file(SAMPLE_FILES.get(name, name))
    assert found is not None, name
    return Path(str(found))


@dataclass(frozen=True)
class Sample:
    data: bytes
    study: str
    series: str
    instance: str
    sop_class: str

    @property
    def dataset(self) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.data))


def make_sample(
    name: str = "ct",
    *,
    study: str | None = None,
    series: str | None = None,
    **attributes: Any,
) -> Sample:
    """A Part 10 copy of a bundled file with fresh (or given) UIDs and any attributes set."""
    ds = pydicom.dcmread(sample_path(name))
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Sample(
        buffer.getvalue(), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID
    )


def multipart_body(parts: Iterable[bytes], *, part_type: str = "application/dicom") -> tuple[bytes, str]:
    """A multipart/related body of ``parts`` and its Content-Type (quoted type)."""
    boundary = secrets.token_hex(12)
    out = io.BytesIO()
    for part in parts:
        out.write(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        out.write(part)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Parse a multipart response independently of the archive's own code."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip().strip('"').encode()
    delimiter = b"--" + boundary
    assert body.startswith(delimiter), body[:80]
    closing = b"\r\n" + delimiter + b"--\r\n"
    assert body.endswith(closing), body[-80:]
    parts = []
    for chunk in body[len(delimiter) : -len(closing)].split(b"\r\n" + delimiter):
        head, _, payload = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            if line.strip():
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def read_header(path: Path) -> ParsedInstance:
    """The header of the file at ``path``, opened as the STOW-RS service opens it."""
    with path.open("rb") as file:
        return read_instance(file)
