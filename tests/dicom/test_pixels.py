"""Decoding one frame from its stored bytes (PS3.5 §8.2), checked against pydicom's own
decoding of the whole instance, on pydicom's test files and the pydicom-data wheel's."""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from app.dicom.frames import PixelInfo, frame_ranges
from app.dicom.header import to_dicom_json
from app.dicom.pixels import (
    PixelDescription,
    Presentation,
    UnsupportedPixelData,
    decode_frame,
    native_frame_bytes,
)
from tests.samples import read_header


@cache
def path(name: str) -> Path:
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


@cache
def dataset(name: str) -> FileDataset:
    return pydicom.dcmread(path(name))


def stored_frame(ds: FileDataset, index: int) -> bytes:
    """Frame ``index`` as the archive stores it: the native frame's bytes, or the
    concatenated fragments of one encapsulated frame."""
    description = PixelDescription.from_dataset(ds)
    frames = description.number_of_frames
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=frames))[index]
    length = description.frame_length
    if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian and length % 2:
        length += 1  # 8-bit OW: the padding byte precedes the last sample (PS3.5 §A.3)
    return bytes(ds.PixelData[index * length : (index + 1) * length])


def reference(ds: FileDataset, index: int) -> np.ndarray:
    """pydicom's own decoding of frame ``index`` from the whole instance (its warnings
    about the files' quirks silenced: they are pydicom's, not the archive's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = ds.pixel_array
    return array[index] if PixelDescription.from_dataset(ds).number_of_frames > 1 else array


# (file, frame index): every transfer syntax and photometric interpretation in the files.
CASES = [
    # Explicit VR Little Endian
    ("CT_small.dcm", 0),  # MONOCHROME2, 16-bit signed
    ("MR_small_padded.dcm", 0),  # 16-bit signed, padded Pixel Data
    ("emri_small.dcm", 9),  # 12 of 16 bits, multi-frame
    ("mlut_18.dcm", 0),  # 12 of 16 bits signed
    ("vlut_04.dcm", 0),  # 8-bit
    ("RG1_UNCR.dcm", 0),  # MONOCHROME1, 15 of 16 bits
    ("liver.dcm", 2),  # 1-bit, multi-frame
    ("SC_rgb_2frame.dcm", 1),  # RGB 8-bit
    ("SC_rgb_16bit_2frame.dcm", 1),  # RGB 16-bit
    ("SC_rgb_32bit_2frame.dcm", 1),  # RGB 32-bit
    ("color-pl.dcm", 0),  # RGB, Planar Configuration 1
    ("SC_ybr_full_uncompressed.dcm", 0),  # YBR_FULL
    ("SC_ybr_full_422_uncompressed.dcm", 0),  # YBR_FULL_422, subsampled native
    ("OBXXXX1A_2frame.dcm", 1),  # PALETTE COLOR 8-bit
    ("eCT_Supplemental.dcm", 1),  # enhanced CT, multi-frame
    # Implicit VR Little Endian
    ("MR_small_implicit.dcm", 0),
    ("rtdose.dcm", 14),  # 32-bit, multi-frame
    ("gdcm-US-ALOKA-16.dcm", 0),  # PALETTE COLOR 16-bit, segmented LUTs
    # Deflated Explicit VR Little Endian
    ("image_dfl.dcm", 0),
    # Explicit VR Big Endian
    ("MR_small_bigendian.dcm", 0),
    ("emri_small_big_endian.dcm", 9),
    ("SC_rgb_expb_2frame.dcm", 1),
    ("SC_rgb_expb_16bit_2frame.dcm", 1),
    ("SC_rgb_expb_32bit_2frame.dcm", 1),
    ("SC_rgb_small_odd_big_endian.dcm", 0),  # 8-bit OW of odd length
    ("ExplVR_BigEnd.dcm", 0),  # RGB, Planar Configuration 1
    ("OBXXXX1A_expb_2frame.dcm", 1),
    ("gdcm-US-ALOKA-16_big.dcm", 0),
    ("liver_expb.dcm", 2),
    ("rtdose_expb.dcm", 14),
    # RLE Lossless
    ("MR_small_RLE.dcm", 0),
    ("emri_small_RLE.dcm", 9),
    ("SC_rgb_rle_2frame.dcm", 1),
    ("SC_rgb_rle_16bit_2frame.dcm", 1),
    ("SC_rgb_rle_32bit_2frame.dcm", 1),
    ("OBXXXX1A_rle_2frame.dcm", 1),
    ("rtdose_rle.dcm", 14),
    # JPEG Baseline (Process 1)
    ("SC_rgb_jpeg_dcmtk.dcm", 0),  # YBR_FULL
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", 0),  # YBR_FULL_422
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 0),  # YBR_FULL_422, subsampled
    ("SC_rgb_dcmtk_+eb+cr.dcm", 0),  # RGB
    ("SC_jpeg_no_color_transform.dcm", 0),  # RGB, no color transform
    ("SC_rgb_small_odd_jpeg.dcm", 0),
    ("examples_ybr_color.dcm", 29),  # YBR_FULL_422, multi-frame
    # JPEG Extended (Process 2 and 4)
    ("JPGExtended.dcm", 0),  # 12-bit
    # JPEG Lossless, Selection Value 1
    ("JPEG-LL.dcm", 0),  # 16-bit signed
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", 0),  # 8-bit
    ("SC_rgb_jpeg_gdcm.dcm", 0),  # RGB
    # JPEG-LS Lossless and Near-Lossless
    ("MR_small_jpeg_ls_lossless.dcm", 0),  # 16-bit signed
    ("emri_small_jpeg_ls_lossless.dcm", 9),
    ("JPEGLSNearLossless_08.dcm", 0),
    ("JPEGLSNearLossless_16.dcm", 0),
    ("SC_rgb_jls_lossy_line.dcm", 0),  # RGB
    # JPEG 2000 Lossless and lossy
    ("MR_small_jp2klossless.dcm", 0),
    ("emri_small_jpeg_2k_lossless.dcm", 9),
    ("J2K_pixelrep_mismatch.dcm", 0),  # signedness differs from the codestream's
    ("US1_J2KR.dcm", 0),  # YBR_RCT
    ("GDCMJ2K_TextGBR.dcm", 0),  # YBR_RCT
    ("JPEG2000.dcm", 0),  # 16-bit signed
    ("US1_J2KI.dcm", 0),  # YBR_ICT
    ("SC_rgb_gdcm_KY.dcm", 0),  # RGB
    ("RG3_J2KI.dcm", 0),  # MONOCHROME1, 10 of 16 bits
]


@pytest.mark.parametrize(("name", "index"), CASES)
def test_a_stored_frame_decodes_as_pydicom_decodes_the_instance(name: str, index: int) -> None:
    ds = dataset(name)
    frame = decode_frame(stored_frame(ds, index), PixelDescription.from_dataset(ds))
    expected = reference(ds, index)
    assert frame.pixels.shape == expected.shape
    assert frame.pixels.dtype.kind == expected.dtype.kind
    np.testing.assert_array_equal(frame.pixels, expected)


def test_the_cases_cover_every_transfer_syntax_and_photometric_interpretation() -> None:
    syntaxes = {dataset(name).file_meta.TransferSyntaxUID.keyword for name, _ in CASES}
    interpretations = {dataset(name).PhotometricInterpretation for name, _ in CASES}
    assert syntaxes == {
        "ImplicitVRLittleEndian", "ExplicitVRLittleEndian", "DeflatedExplicitVRLittleEndian",
        "ExplicitVRBigEndian", "RLELossless", "JPEGBaseline8Bit", "JPEGExtended12Bit", "JPEGLosslessSV1",
        "JPEGLSLossless", "JPEGLSNearLossless", "JPEG2000Lossless", "JPEG2000",
    }  # fmt: skip
    assert interpretations == {
        "MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT",
        "PALETTE COLOR",
    }  # fmt: skip


def test_ybr_decodes_to_rgb_and_keeps_its_color_space_on_request() -> None:
    ds = dataset("SC_rgb_dcmtk_+eb+cy+np.dcm")
    description = PixelDescription.from_dataset(ds)
    assert decode_frame(stored_frame(ds, 0), description).photometric_interpretation == "RGB"
    raw = decode_frame(stored_frame(ds, 0), description, as_rgb=False)
    assert raw.photometric_interpretation == "YBR_FULL_422"
    # Red in the top left corner: high Cr in YCbCr (PS3.3 C.7.6.3.1.2)
    assert raw.pixels[0, 0, 2] > 200 and reference(ds, 0)[0, 0, 0] > 200
    subsampled = dataset("SC_ybr_full_422_uncompressed.dcm")
    native = decode_frame(
        stored_frame(subsampled, 0), PixelDescription.from_dataset(subsampled), as_rgb=False
    )
    assert native.photometric_interpretation == "YBR_FULL"


def test_undecodable_frames_raise_unsupported_pixel_data() -> None:
    broken = dataset("JPEG2000-embedded-sequence-delimiter.dcm")
    with pytest.raises(UnsupportedPixelData, match="JPEG 2000"):
        decode_frame(stored_frame(broken, 0), PixelDescription.from_dataset(broken))
    truncated = dataset("MR_truncated.dcm")
    with pytest.raises(UnsupportedPixelData, match="8130 bytes, 8192 expected"):
        decode_frame(truncated.PixelData, PixelDescription.from_dataset(truncated))
    ct = PixelDescription.from_dataset(dataset("CT_small.dcm"))
    with pytest.raises(
        UnsupportedPixelData, match=r"cannot decode a JPEG-LS Lossless|No pixel data decoders"
    ):
        decode_frame(b"\0" * 32768, replace(ct, transfer_syntax_uid="1.2.840.10008.1.2.4.100"))
    with pytest.raises(UnsupportedPixelData, match="YBR_PARTIAL_420"):
        decode_frame(b"", replace(ct, photometric_interpretation="YBR_PARTIAL_420", samples_per_pixel=3))
    with pytest.raises(UnsupportedPixelData, match="Bits Stored 17"):
        replace(ct, bits_stored=17, high_bit=16)


def test_high_bit_other_than_bits_stored_minus_one_is_honoured() -> None:
    # PS3.5 §8.1.1 once allowed the stored bits anywhere: 12 bits ending at bit 13.
    ds = dataset("emri_small.dcm")
    description = PixelDescription.from_dataset(ds)
    expected = reference(ds, 0)
    shifted = (expected.astype(np.uint16) << 2) | 0b1100_0000_0000_0011
    frame = decode_frame(shifted.tobytes(), replace(description, high_bit=13))
    np.testing.assert_array_equal(frame.pixels, expected)
    signed = replace(description, high_bit=13, pixel_representation=1)
    values = decode_frame(shifted.tobytes(), signed).pixels
    np.testing.assert_array_equal(
        values, np.where(expected >= 2048, expected.astype(np.int32) - 4096, expected)
    )


# Big-endian files and their little-endian twins, with the same pixels.
TWINS = [
    ("MR_small_bigendian.dcm", "MR_small.dcm", 0),
    ("SC_rgb_expb_16bit_2frame.dcm", "SC_rgb_16bit_2frame.dcm", 1),
    ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm", 0),
    ("OBXXXX1A_expb_2frame.dcm", "OBXXXX1A_2frame.dcm", 1),
    ("liver_expb.dcm", "liver.dcm", 1),
    ("rtdose_expb.dcm", "rtdose.dcm", 3),
]


@pytest.mark.parametrize(("big", "little", "index"), TWINS)
def test_big_endian_frames_transcode_to_their_little_endian_twins(big: str, little: str, index: int) -> None:
    native = native_frame_bytes(
        stored_frame(dataset(big), index), PixelDescription.from_dataset(dataset(big))
    )
    assert native.data == stored_frame(dataset(little), index)
    twin = PixelDescription.from_dataset(dataset(little), ExplicitVRLittleEndian)
    assert native.description == replace(twin, pixel_vr=native.description.pixel_vr)


@pytest.mark.parametrize(
    ("name", "index", "interpretation"),
    [
        ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 0, "RGB"),
        ("examples_ybr_color.dcm", 3, "RGB"),
        ("US1_J2KI.dcm", 0, "RGB"),
        ("JPEG-LL.dcm", 0, "MONOCHROME2"),
        ("JPGExtended.dcm", 0, "MONOCHROME2"),
        ("emri_small_RLE.dcm", 4, "MONOCHROME2"),
        ("SC_rgb_rle_32bit_2frame.dcm", 1, "RGB"),
        ("MR_small_jpeg_ls_lossless.dcm", 0, "MONOCHROME2"),
    ],
)
def test_compressed_frames_transcode_to_explicit_vr_little_endian(
    name: str, index: int, interpretation: str
) -> None:
    ds = dataset(name)
    native = native_frame_bytes(stored_frame(ds, index), PixelDescription.from_dataset(ds))
    expected = reference(ds, index)
    assert native.data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    assert native.description.transfer_syntax_uid == ExplicitVRLittleEndian
    assert native.description.photometric_interpretation == interpretation
    assert native.description.planar_configuration == 0
    again = decode_frame(native.data, native.description)
    np.testing.assert_array_equal(again.pixels, expected)


def test_little_endian_native_frames_transcode_unchanged() -> None:
    ds = dataset("color-pl.dcm")
    description = PixelDescription.from_dataset(ds)
    native = native_frame_bytes(ds.PixelData, description)
    assert native.data == ds.PixelData
    assert native.description == replace(description, transfer_syntax_uid=ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    ("name", "index"),
    [("CT_small.dcm", 0), ("emri_small_jpeg_2k_lossless.dcm", 7), ("examples_ybr_color.dcm", 12)],
)
def test_frames_located_by_the_index_decode_with_their_dicom_json(name: str, index: int) -> None:
    # The archive's own path: header parsed, frame ranges from the index, DICOM JSON.
    parsed = read_header(path(name))
    pixel, ds = parsed.pixel, parsed.dataset
    assert pixel is not None
    info = PixelInfo(
        pixel.value_offset, pixel.value_length, pixel.encapsulated, [f[0] for f in pixel.fragments],
        [f[1] for f in pixel.fragments], pixel.basic_offset_table, int(ds.get("NumberOfFrames") or 1),
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated, pixel.frame_starts,
    )  # fmt: skip
    ranges = frame_ranges(info)
    assert ranges is not None
    content = path(name).read_bytes()
    data = b"".join(content[offset : offset + length] for offset, length in ranges[index])
    metadata = to_dicom_json(parsed)
    description = PixelDescription.from_json(metadata, parsed.transfer_syntax_uid)
    assert description == PixelDescription.from_dataset(dataset(name))
    np.testing.assert_array_equal(decode_frame(data, description).pixels, reference(dataset(name), index))
    presentation = Presentation.from_json(metadata, index, transfer_syntax_uid=parsed.transfer_syntax_uid)
    expected = Presentation.from_dataset(dataset(name), index)
    assert (presentation.rescale_intercept, presentation.window) == (
        expected.rescale_intercept,
        expected.window,
    )


def test_description_from_json_reads_the_transfer_syntax_and_needs_one() -> None:
    metadata = dataset("MR_small.dcm").to_json_dict(bulk_data_element_handler=lambda _: "uri")
    assert "00020010" not in metadata
    with pytest.raises(ValueError, match="transfer syntax"):
        PixelDescription.from_json(metadata)
    metadata["00020010"] = {"vr": "UI", "Value": [ExplicitVRBigEndian]}
    description = PixelDescription.from_json(metadata, ExplicitVRLittleEndian)
    assert description.transfer_syntax_uid == ExplicitVRBigEndian
    assert (description.rows, description.columns, description.bits_stored) == (64, 64, 16)
    assert description.pixel_representation == 1 and description.pixel_vr == "OW"
    del metadata["00280010"]
    with pytest.raises(UnsupportedPixelData, match="Rows"):
        PixelDescription.from_json(metadata)


def test_presentation_from_json_matches_the_dataset() -> None:
    for name in ("MR_small.dcm", "CT_small.dcm", "mlut_18.dcm", "vlut_04.dcm", "OBXXXX1A.dcm"):
        ds = dataset(name)
        bulk: dict[str, bytes] = {}

        def keep(element: pydicom.DataElement, bulk: dict[str, bytes] = bulk) -> str:
            uri = f"bulk/{element.tag:08X}"
            bulk[uri] = element.value
            return uri

        metadata = ds.to_json_dict(bulk_data_threshold=256, bulk_data_element_handler=keep)
        from_json = Presentation.from_json(metadata, bulk=bulk, transfer_syntax_uid=ExplicitVRLittleEndian)
        from_dataset = Presentation.from_dataset(ds)
        assert set(Presentation.bulk_data_uris(metadata)) <= set(bulk), name
        for field in ("rescale_slope", "rescale_intercept", "window"):
            assert getattr(from_json, field) == getattr(from_dataset, field), (name, field)
        for field in ("modality_lut", "voi_lut", "palette"):
            lut, expected = getattr(from_json, field), getattr(from_dataset, field)
            assert (lut is None) == (expected is None), (name, field)
            if lut is not None:
                assert (lut.first, lut.bits) == (expected.first, expected.bits)
                np.testing.assert_array_equal(lut.data, expected.data)


def test_presentation_reads_enhanced_multiframe_functional_groups() -> None:
    ds = dataset("eCT_Supplemental.dcm")
    presentation = Presentation.from_dataset(ds, frame=1)
    assert (presentation.rescale_slope, presentation.rescale_intercept) == (1.0, -1024.0)
    assert presentation.window is not None
    assert (presentation.window.center, presentation.window.width) == (49.0, 102.0)
    assert presentation.palette is None  # MONOCHROME2: its palette is supplemental
    metadata = ds.to_json_dict(bulk_data_element_handler=lambda _: "uri")
    from_json = Presentation.from_json(metadata, 1, transfer_syntax_uid=ExplicitVRLittleEndian)
    assert from_json.window == presentation.window


def test_a_palette_needs_its_bulk_lut_data() -> None:
    metadata = dataset("OBXXXX1A.dcm").to_json_dict(
        bulk_data_threshold=256, bulk_data_element_handler=lambda e: f"bulk/{e.tag:08X}"
    )
    uris = Presentation.bulk_data_uris(metadata)
    assert uris == ["bulk/00281201", "bulk/00281202", "bulk/00281203"]
    with pytest.raises(UnsupportedPixelData, match="Palette Color"):
        Presentation.from_json(metadata, transfer_syntax_uid=ExplicitVRLittleEndian)


def _first_fragment(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


def test_only_invalid_sequential_scan_headers_are_repaired():
    from app.dicom.pixels import _sequential_scan_repaired

    # pydicom's 12-bit JPEG Extended file has Se 0 in its scan header: set to 63, nothing else.
    broken = _first_fragment("JPEG-lossy.dcm")
    repaired = _sequential_scan_repaired(broken)
    assert repaired is not None and len(repaired) == len(broken)
    assert sum(a != b for a, b in zip(repaired, broken, strict=True)) == 1
    assert _sequential_scan_repaired(repaired) is None
    # A valid baseline stream and a lossless one (whose Ss is a predictor) are left alone.
    assert _sequential_scan_repaired(_first_fragment("SC_rgb_jpeg_dcmtk.dcm")) is None
    assert _sequential_scan_repaired(_first_fragment("JPEG-LL.dcm")) is None
