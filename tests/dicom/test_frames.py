"""Frame byte ranges from the index alone (PS3.5 §8.2, Annex A.4)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.encaps import generate_frames

from app.dicom.frames import PixelInfo, frame_ranges
from tests.samples import read_header, sample_path


def _info(path: Path) -> PixelInfo:
    parsed = read_header(path)
    pixel, ds = parsed.pixel, parsed.dataset
    assert pixel is not None
    return PixelInfo(
        offset=pixel.value_offset,
        length=pixel.value_length,
        encapsulated=pixel.encapsulated,
        fragment_offsets=[f[0] for f in pixel.fragments],
        fragment_lengths=[f[1] for f in pixel.fragments],
        basic_offset_table=pixel.basic_offset_table,
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        rows=ds.Rows,
        columns=ds.Columns,
        samples_per_pixel=ds.SamplesPerPixel,
        bits_allocated=ds.BitsAllocated,
    )


def _read(path: Path, frame: list[tuple[int, int]]) -> bytes:
    data = path.read_bytes()
    return b"".join(data[o : o + n] for o, n in frame)


def test_native_multiframe_frames_are_slices_of_pixel_data():
    path = sample_path("multiframe")
    frames = frame_ranges(_info(path))
    assert frames is not None
    ds = pydicom.dcmread(path)
    size = len(ds.PixelData) // int(ds.NumberOfFrames)
    assert [_read(path, f) for f in frames] == [
        ds.PixelData[i * size : (i + 1) * size] for i in range(int(ds.NumberOfFrames))
    ]


def test_encapsulated_frames_match_pydicom():
    path = sample_path("jpeg")
    frames = frame_ranges(_info(path))
    assert frames is not None
    ds = pydicom.dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    assert [_read(path, f) for f in frames] == expected


def test_fragments_grouped_by_the_basic_offset_table():
    # Two frames of two fragments each; BOT offsets count from the first item header.
    info = PixelInfo(
        offset=100, length=None, encapsulated=True,
        fragment_offsets=[1008, 1018, 1030, 1042], fragment_lengths=[2, 4, 4, 6],
        basic_offset_table=[0, 22], number_of_frames=2,
        rows=None, columns=None, samples_per_pixel=None, bits_allocated=None,
    )  # fmt: skip
    assert frame_ranges(info) == [[(1008, 2), (1018, 4)], [(1030, 4), (1042, 6)]]


def test_unknown_when_fragments_cannot_be_assigned():
    info = PixelInfo(100, None, True, [8, 20, 40], [4, 4, 4], [], 2, None, None, None, None)
    assert frame_ranges(info) is None
