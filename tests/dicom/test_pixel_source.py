"""What a stored instance's pixel source keeps of its metadata: the description, and the
presentation of each frame (made once when the frames share it)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from app.dicom.pixel_source import PixelSource
from app.dicom.pixels import UnsupportedPixelData

_SYNTAX = "1.2.840.10008.1.2.1"


def _image(**attributes: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 4, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _voi(center: float, width: float) -> Dataset:
    group, window = Dataset(), Dataset()
    window.WindowCenter, window.WindowWidth = center, width
    group.FrameVOILUTSequence = [window]
    return group


def test_frames_of_a_classic_image_share_one_presentation() -> None:
    source = PixelSource.from_json(
        _image(WindowCenter=40, WindowWidth=400).to_json_dict(), _SYNTAX, {}, has_pixels=True
    )
    assert source.pixel_description().rows == 4 and not source.per_frame
    first = source.presentation(0)
    assert source.presentation(3) is first
    assert first.window is not None and (first.window.center, first.window.width) == (40, 400)


def test_each_frame_of_an_enhanced_image_has_its_own_window() -> None:
    ds = _image(NumberOfFrames=2)
    ds.PerFrameFunctionalGroupsSequence = [_voi(40, 400), _voi(300, 1500)]
    text = str(ds.to_json())
    source = PixelSource.from_json(ds.to_json_dict(), _SYNTAX, {}, True, len(text))
    assert source.per_frame
    windows = [source.presentation(i).window for i in (0, 1)]
    assert [(w.center, w.width) for w in windows if w is not None] == [(40, 400), (300, 1500)]
    # The per-frame groups are kept, and counted in the entry's size.
    assert source.size > len(text)


def test_unusable_pixel_attributes_are_refused_each_time_with_a_fresh_error() -> None:
    metadata = _image(BitsStored=20).to_json_dict()
    source = PixelSource.from_json(metadata, _SYNTAX, {}, has_pixels=True)
    assert source.description is None and source.problem is not None
    errors = []
    for _ in range(2):
        with pytest.raises(UnsupportedPixelData, match="Bits Stored") as caught:
            source.pixel_description()
        errors.append(caught.value)
    assert errors[0] is not errors[1]
    # An instance without Pixel Data has no description, and says so.
    none = PixelSource.from_json({}, _SYNTAX, {}, has_pixels=False)
    with pytest.raises(UnsupportedPixelData, match="no pixel data"):
        none.pixel_description()
