"""Rendered images and thumbnails (PS3.18 §8.3.5), checked against the PS3.3 C.11 formulas
written out independently here, and against pydicom's own LUT functions."""

from __future__ import annotations

import time
from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

from app.dicom.pixels import DecodedFrame, PixelDescription, Presentation, decode_frame
from app.dicom.rendering import (
    THUMBNAIL_SIZE,
    RenderOptions,
    Viewport,
    encode_png,
    parse_rendered_params,
    parse_uri_params,
    render,
    render_array,
)
from app.errors import BadRequest, NotAcceptable
from tests.dicom.test_pixels import dataset, reference, stored_frame


def frame_of(name: str, index: int = 0, *, as_rgb: bool = True) -> tuple[DecodedFrame, PixelDescription]:
    ds = dataset(name)
    description = PixelDescription.from_dataset(ds)
    return decode_frame(stored_frame(ds, index), description, as_rgb=as_rgb), description


def rendered(name: str, media_type: str = "image/png", index: int = 0, **params: str) -> np.ndarray:
    frame, description = frame_of(name, index)
    presentation = Presentation.from_dataset(dataset(name), index)
    body = render(frame, description, presentation, media_type, parse_rendered_params(params))
    return np.asarray(Image.open(BytesIO(body)))


def linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, as written there, onto 0-255."""
    below = x <= center - 0.5 - (width - 1) / 2
    above = x > center - 0.5 + (width - 1) / 2
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.round(np.select([below, above], [0.0, 255.0], inside)).astype(np.uint8)


def linear_exact(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2 onto 0-255."""
    below, above = x <= center - width / 2, x > center + width / 2
    inside = ((x - center) / width + 0.5) * 255
    return np.round(np.select([below, above], [0.0, 255.0], inside)).astype(np.uint8)


def sigmoid(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1 onto 0-255."""
    return np.round(255 / (1 + np.exp(-4 * (x - center) / width))).astype(np.uint8)


def hounsfield() -> np.ndarray:
    ds = dataset("CT_small.dcm")  # Rescale Slope 1, Intercept -1024, no window
    return reference(ds, 0).astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_a_requested_window_renders_exactly_as_the_linear_formula() -> None:
    assert np.array_equal(rendered("CT_small.dcm", window="40,400"), linear(hounsfield(), 40, 400))
    assert np.array_equal(
        rendered("CT_small.dcm", window="-600,1500,linear"), linear(hounsfield(), -600, 1500)
    )


def test_linear_exact_and_sigmoid_windows() -> None:
    exact = rendered("CT_small.dcm", window="40,400,linear-exact")
    assert np.array_equal(exact, linear_exact(hounsfield(), 40, 400))
    smooth = rendered("CT_small.dcm", window="40,400,SIGMOID")
    assert np.array_equal(smooth, sigmoid(hounsfield(), 40, 400))


def test_jpeg_output_is_close_to_the_formula() -> None:
    decoded = rendered("CT_small.dcm", "image/jpeg", window="40,400", quality="95").astype(int)
    difference = np.abs(decoded - linear(hounsfield(), 40, 400))
    assert difference.mean() < 1.5 and np.percentile(difference, 99) < 12
    rough = rendered("CT_small.dcm", "image/jpeg", window="40,400", quality="5").astype(int)
    assert np.abs(rough - linear(hounsfield(), 40, 400)).mean() > difference.mean()


def test_the_instance_window_applies_unless_the_request_has_one() -> None:
    pixels = reference(dataset("MR_small.dcm"), 0).astype(np.float64)  # Window 600/1600
    assert np.array_equal(rendered("MR_small.dcm"), linear(pixels, 600, 1600))
    assert np.array_equal(rendered("MR_small.dcm", window="300,200"), linear(pixels, 300, 200))


def test_without_any_window_the_frame_range_is_spanned() -> None:
    values = hounsfield()
    low, high = values.min(), values.max()
    expected = linear_exact(values, (low + high) / 2, high - low)
    image = rendered("CT_small.dcm")
    assert np.array_equal(image, expected)
    assert image.min() == 0 and image.max() == 255


def test_monochrome1_is_inverted() -> None:
    pixels = reference(dataset("RG1_UNCR.dcm"), 0).astype(np.float64)  # Window 15000/30000
    assert np.array_equal(rendered("RG1_UNCR.dcm"), 255 - linear(pixels, 15000, 30000))
    frame, description = frame_of("RG1_UNCR.dcm")
    as_monochrome2 = DecodedFrame(frame.pixels, "MONOCHROME2")
    presentation = Presentation.from_dataset(dataset("RG1_UNCR.dcm"))
    inverted = render_array(frame, description, presentation).astype(int)
    plain = render_array(as_monochrome2, description, presentation).astype(int)
    assert np.array_equal(inverted + plain, np.full_like(plain, 255))


def test_modality_lut_sequence_and_voi_lut_sequence() -> None:
    ds = dataset("mlut_18.dcm")  # Modality LUT Sequence, no window: the range is spanned
    values = apply_modality_lut(reference(ds, 0), ds).astype(np.float64)
    low, high = values.min(), values.max()
    assert np.array_equal(rendered("mlut_18.dcm"), linear_exact(values, (low + high) / 2, high - low))
    ds = dataset("vlut_04.dcm")  # VOI LUT Sequence of 16-bit entries
    expected = np.round(apply_voi_lut(reference(ds, 0), ds).astype(np.float64) * 255 / 65535)
    assert np.array_equal(rendered("vlut_04.dcm"), expected.astype(np.uint8))
    assert np.array_equal(rendered("vlut_04.dcm", window="128,256"), linear(reference(ds, 0) * 1.0, 128, 256))


@pytest.mark.parametrize("name", ["OBXXXX1A.dcm", "OBXXXX1A_rle_2frame.dcm", "gdcm-US-ALOKA-16.dcm"])
def test_palette_color_goes_through_its_luts(name: str) -> None:
    ds = dataset(name)
    expected = (apply_color_lut(reference(ds, 0), ds) >> 8).astype(np.uint8)
    image = rendered(name)
    assert image.shape == (*expected.shape[:2], 3)
    assert np.array_equal(image, expected)


@pytest.mark.parametrize(
    ("name", "shift"),
    [
        ("SC_rgb.dcm", 0),
        ("color-pl.dcm", 0),
        ("SC_rgb_16bit.dcm", 8),
        ("SC_rgb_32bit.dcm", 24),
        ("US1_J2KR.dcm", 0),
    ],
)
def test_rgb_renders_its_samples_scaled_to_8_bits(name: str, shift: int) -> None:
    expected = (reference(dataset(name), 0) >> shift).astype(np.uint8)
    assert np.array_equal(rendered(name, window="1,1"), expected)  # a window does not apply to color


@pytest.mark.parametrize(
    "name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_ybr_full_uncompressed.dcm"]
)
def test_ybr_renders_as_rgb_whether_or_not_the_decoder_converted_it(name: str) -> None:
    rgb = reference(dataset(name), 0)
    assert np.array_equal(rendered(name), rgb)
    raw, description = frame_of(name, as_rgb=False)
    assert raw.photometric_interpretation.startswith("YBR_FULL")
    assert np.array_equal(render_array(raw, description, Presentation()), rgb)


def test_the_chosen_frame_of_a_multiframe_instance_renders() -> None:
    ds = dataset("emri_small.dcm")  # 10 frames, no window: each frame spans its own range
    for index in (0, 6):
        values = reference(ds, index).astype(np.float64)
        low, high = values.min(), values.max()
        assert np.array_equal(
            rendered("emri_small.dcm", index=index), linear_exact(values, (low + high) / 2, high - low)
        )
    # Enhanced CT: rescale and window from the frame's functional groups.
    values = reference(dataset("eCT_Supplemental.dcm"), 1).astype(np.float64) - 1024
    assert np.array_equal(rendered("eCT_Supplemental.dcm", index=1), linear(values, 49, 102))


def test_one_bit_and_32_bit_frames() -> None:
    assert set(np.unique(rendered("liver.dcm", index=1))) <= {0, 255}
    values = reference(dataset("rtdose.dcm"), 3).astype(np.float64)
    low, high = values.min(), values.max()
    assert np.array_equal(rendered("rtdose.dcm", index=3), linear_exact(values, (low + high) / 2, high - low))


def test_viewport_fits_the_image_keeping_its_aspect_ratio() -> None:
    assert rendered("JPEG2000.dcm", viewport="128,128").shape == (128, 32)  # 1024 rows, 256 columns
    assert rendered("MR_small.dcm", viewport="256,100").shape == (100, 100)  # enlarged to fit
    region = rendered("CT_small.dcm", viewport="100,100,10,20,30,40")
    assert region.shape == (100, 75)


def test_the_source_region_is_cut_and_flipped() -> None:
    full = rendered("CT_small.dcm", window="40,400")
    assert np.array_equal(
        rendered("CT_small.dcm", window="40,400", viewport="30,40,10,20,30,40"), full[20:60, 10:40]
    )
    flipped = rendered("CT_small.dcm", window="40,400", viewport="30,40,40,60,-30,-40")
    assert np.array_equal(flipped, full[20:60, 10:40][::-1, ::-1])
    to_edge = rendered("CT_small.dcm", window="40,400", viewport="28,28,100,100,,")
    assert np.array_equal(to_edge, full[100:, 100:])
    with pytest.raises(BadRequest, match=r"'viewport'.*128x128"):
        rendered("CT_small.dcm", viewport="100,100,100,100,50,10")


def test_thumbnails_fit_the_default_size_and_are_never_enlarged() -> None:
    frame, description = frame_of("JPEG2000.dcm")
    thumbnail = render_array(frame, description, Presentation(), thumbnail=True)
    assert thumbnail.shape == (THUMBNAIL_SIZE, THUMBNAIL_SIZE // 4)
    small, description = frame_of("MR_small.dcm")
    assert render_array(small, description, Presentation(), thumbnail=True).shape == (64, 64)
    options = RenderOptions(viewport=Viewport(32, 32))
    assert render_array(small, description, Presentation(), options, thumbnail=True).shape == (32, 32)


def test_gif_and_jpeg_color_output() -> None:
    frame, description = frame_of("CT_small.dcm")
    options = parse_rendered_params({"window": "40,400"})
    gif = render(frame, description, Presentation.from_dataset(dataset("CT_small.dcm")), "image/gif", options)
    image = Image.open(BytesIO(gif))
    assert image.format == "GIF"
    assert np.array_equal(np.asarray(image.convert("L")), linear(hounsfield(), 40, 400))
    color = rendered("US1_UNCR.dcm", "image/jpeg")
    assert color.shape == (480, 640, 3)
    assert np.abs(color.astype(int) - reference(dataset("US1_UNCR.dcm"), 0)).mean() < 3


def test_an_unknown_media_type_is_not_acceptable() -> None:
    frame, description = frame_of("CT_small.dcm")
    with pytest.raises(NotAcceptable, match="image/jp2"):
        render(frame, description, Presentation(), "image/jp2")
    assert render(frame, description, Presentation(), "IMAGE/PNG; charset=x").startswith(b"\x89PNG")


def test_rendered_parameters_parse() -> None:
    options = parse_rendered_params(
        [("window", "40,400,linear-exact"), ("viewport", "512,256,0,0,-64,"), ("quality", "70"),
         ("annotation", "patient"), ("annotation", "technique"), ("accept", "image/png")]
    )  # fmt: skip
    assert options.window is not None
    assert (options.window.center, options.window.width, options.window.function) == (40, 400, "LINEAR_EXACT")
    assert options.viewport == Viewport(512, 256, (0, 0, -64, None))
    assert options.quality == 70 and options.annotations == {"patient", "technique"}
    assert parse_rendered_params({}) == RenderOptions()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("window", "40"), ("window", "abc,400"), ("window", "40,0.5"), ("window", "40,0,sigmoid"),
        ("window", "40,400,cubic"), ("window", "nan,400"), ("viewport", "0,10"), ("viewport", "a,b"),
        ("viewport", "10,10,1,2,3"), ("viewport", "10,10,-1,0,5,5"), ("viewport", "10,10,0,0,0,5"),
        ("quality", "0"), ("quality", "101"), ("quality", "high"), ("annotation", "everything"),
    ],
)  # fmt: skip
def test_invalid_rendered_parameters_are_bad_requests_naming_them(name: str, value: str) -> None:
    with pytest.raises(BadRequest, match=f"'{name}'"):
        parse_rendered_params({name: value})


def test_a_repeated_parameter_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="'window' is given more than once"):
        parse_rendered_params([("window", "1,2"), ("window", "3,4")])


def test_wado_uri_parameters_map_onto_the_same_options() -> None:
    options = parse_uri_params(
        {"windowCenter": "40", "windowWidth": "400", "rows": "256", "frameNumber": "3", "imageQuality": "80",
         "region": "0.25,0,0.75,0.5", "contentType": "image/jpeg"}
    )  # fmt: skip
    assert options.window is not None and (options.window.center, options.window.width) == (40, 400)
    assert options.viewport == Viewport(None, 256, None, (0.25, 0, 0.75, 0.5))
    assert (options.frame_number, options.quality) == (3, 80)
    frame, description = frame_of("CT_small.dcm")
    presentation = Presentation.from_dataset(dataset("CT_small.dcm"))
    image = render_array(frame, description, presentation, options)
    assert image.shape == (256, 256)  # a 64x64 region, enlarged to 256 rows
    cut = parse_uri_params({"windowCenter": "40", "windowWidth": "400", "region": "0.25,0,0.75,0.5"})
    assert np.array_equal(
        render_array(frame, description, presentation, cut), linear(hounsfield(), 40, 400)[:64, 32:96]
    )


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"windowCenter": "40"}, "windowWidth"), ({"windowCenter": "40", "windowWidth": "0"}, "windowWidth"),
        ({"rows": "-1"}, "rows"), ({"columns": "x"}, "columns"), ({"frameNumber": "0"}, "frameNumber"),
        ({"region": "0.5,0.5,0.2,0.9"}, "region"), ({"imageQuality": "200"}, "imageQuality"),
    ],
)  # fmt: skip
def test_invalid_wado_uri_parameters_are_bad_requests(params: dict[str, str], name: str) -> None:
    with pytest.raises(BadRequest, match=name):
        parse_uri_params(params)


def test_rendering_is_fast_and_copes_with_4096_square_frames() -> None:
    frame, description = frame_of("693_UNCI.dcm")  # 512x512 16-bit CT
    presentation = Presentation.from_dataset(dataset("693_UNCI.dcm"))
    render(frame, description, presentation, "image/jpeg")
    started = time.perf_counter()
    for _ in range(10):
        render(frame, description, presentation, "image/jpeg")
    assert (time.perf_counter() - started) / 10 < 0.05  # a few ms; generous for a busy machine
    large = DecodedFrame(np.tile(frame.pixels, (8, 8)), "MONOCHROME2")
    image = render_array(large, description, presentation)
    assert image.shape == (4096, 4096)
    assert np.array_equal(image[512:1024, :512], render_array(frame, description, presentation))


def test_the_full_range_of_signed_16_bit_values_spans_black_to_white() -> None:
    frame, description = frame_of("CT_small.dcm")
    pixels = frame.pixels.copy()
    pixels[0, 0], pixels[0, 1] = -32768, 32767
    image = render_array(DecodedFrame(pixels, "MONOCHROME2"), description, Presentation())
    assert (image[0, 0], image[0, 1]) == (0, 255)
    expected = linear_exact(pixels.astype(np.float64), -0.5, 65535)
    assert np.array_equal(image, expected)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 63), (7, 9, 3), (128, 1, 3)])
def test_png_files_decode_to_the_pixels_written(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    image = Image.open(BytesIO(encode_png(pixels)))
    image.load()  # Pillow checks every chunk's CRC and the deflate stream on the way
    assert image.mode == ("RGB" if len(shape) == 3 else "L")
    assert np.array_equal(np.asarray(image), pixels)
    # Not a 16-bit or a two-sample array: those are no rendering's output.
    with pytest.raises(ValueError, match="PNG"):
        encode_png(pixels.astype(np.uint16))
