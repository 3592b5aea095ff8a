"""Rendered images and thumbnails (PS3.18 §8.3.5, §9.5, §10.4): one decoded frame through
the grayscale or color pipeline of PS3.4 Annex N.2 into an 8-bit JPEG, PNG or GIF.

Grayscale frames (MONOCHROME1, MONOCHROME2) go through

1. the Modality LUT (PS3.3 C.11.1): see :class:`~app.dicom.pixels.Presentation`;
2. the VOI LUT (PS3.3 C.11.2): the request's ``window``, else the instance's first Window
   Center and Width with its VOI LUT Function, else its VOI LUT Sequence, else a
   LINEAR_EXACT window spanning the frame's values after the Modality LUT;
3. inversion for MONOCHROME1 (PS3.3 C.7.6.3.1.2), so that low values are always dark.

Color frames have no VOI stage (PS3.4 N.2.2), so a requested window is ignored for them.
RGB is scaled to 8 bits; YBR_FULL and YBR_FULL_422 (when decoded without conversion) are
converted with pydicom's ``convert_color_space``; PALETTE COLOR goes through its Palette
Color LUTs (PS3.3 C.7.6.3.1.5). Presentation States, ICC profiles and burned-in
annotation are not supported.

Integer frames of at most 16 bits are rendered through a table computed for every value
their container can hold, so the per-pixel work is one lookup whatever the pipeline. The
source region and flips are cut before that lookup, the viewport is applied after it.

Everything is blocking and CPU-bound (about a millisecond for a 512x512 frame, tens of
milliseconds for 4096x4096): run it in a worker thread. No state is shared between calls.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.pixels.processing import convert_color_space

from app.dicom.pixels import DecodedFrame, PixelDescription, Presentation, UnsupportedPixelData, VoiWindow
from app.errors import BadRequest, NotAcceptable

__all__ = [
    "DEFAULT_QUALITY",
    "MAX_RENDERED_PIXELS",
    "MAX_VIEWPORT_SIDE",
    "RENDERED_MEDIA_TYPES",
    "THUMBNAIL_SIZE",
    "RenderOptions",
    "Viewport",
    "encode_image",
    "encode_png",
    "output_size",
    "parse_rendered_params",
    "parse_uri_params",
    "render",
    "render_array",
    "working_memory",
]

#: The media types a frame renders to (PS3.18 §8.7.4, Table 8.7.4-1: single-frame images).
RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
#: JPEG quality when the request names none (PS3.18 §8.3.5.1.2 leaves it to the server).
DEFAULT_QUALITY = 90
#: Largest side of a thumbnail when the request has no viewport (PS3.18 §9.5 leaves the
#: size to the server).
THUMBNAIL_SIZE = 128
#: Largest viewport side a request may ask for, and largest rendered image in pixels
#: (PS3.18 §8.3.5.1.3 leaves the bounds to the server). A viewport is the client's
#: display: 4096 covers a 4K screen; more would only let one request claim gigabytes.
MAX_VIEWPORT_SIDE = 4096
MAX_RENDERED_PIXELS = 4096 * 4096
#: PS3.18 §8.3.5.1.1 annotation values.
ANNOTATIONS = frozenset({"patient", "technique"})

_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
# At most 9 digits: any larger viewport or quality is out of range anyway.
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")


@dataclass(frozen=True)
class Viewport:
    """Where the rendered image goes (PS3.18 §8.3.5.1.3).

    ``width`` and ``height`` bound the output, which keeps the source's aspect ratio (None:
    unbounded, as WADO-URI ``rows`` or ``columns`` alone allow, PS3.18 §8.2.2). ``source`` is the region
    ``(sx, sy, sw, sh)`` in frame pixels, a negative width or height flipping it; a None
    width or height runs to the frame's edge. ``region`` is WADO-URI's ``(x1, y1, x2, y2)``
    as fractions of the frame (PS3.18 §8.2.4)."""

    width: int | None
    height: int | None
    source: tuple[int, int, int | None, int | None] | None = None
    region: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class RenderOptions:
    """The rendering parameters of a request. ``annotations`` are accepted and not burned
    in (PS3.18 §8.3.5.1.1 lets an origin server ignore them); ``frame_number`` is
    WADO-URI's ``frameNumber`` (1-based), for the caller to pick the frame."""

    window: VoiWindow | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY
    annotations: frozenset[str] = frozenset()
    frame_number: int | None = None


Params = Mapping[str, str] | Iterable[tuple[str, str]]


def parse_rendered_params(params: Params) -> RenderOptions:
    """``window``, ``viewport``, ``quality`` and ``annotation`` of a WADO-RS rendered or
    thumbnail request (PS3.18 §8.3.5.1.1-4). Other parameters (``accept``, ``charset``,
    ``iccprofile``) are the caller's. Raises BadRequest naming the invalid parameter.

    >>> parse_rendered_params({"window": "40,400,linear", "viewport": "256,256"}).viewport
    Viewport(width=256, height=256, source=None, region=None)
    """
    one, annotations = _collect(params, {"window", "viewport", "quality"})
    return RenderOptions(
        window=_parse_window(one["window"]) if "window" in one else None,
        viewport=_viewport(one["viewport"]) if "viewport" in one else None,
        quality=_quality("quality", one.get("quality")),
        annotations=annotations,
    )


def parse_uri_params(params: Params) -> RenderOptions:
    """WADO-URI's ``windowCenter``, ``windowWidth``, ``rows``, ``columns``, ``region``,
    ``frameNumber``, ``imageQuality`` and ``annotation`` (PS3.18 §8.2) as the same
    options; the window is LINEAR, as PS3.3 C.11.2.1.2 defines Window Center and Width."""
    names = {"windowCenter", "windowWidth", "rows", "columns", "region", "frameNumber", "imageQuality"}
    one, annotations = _collect(params, names)
    window = None
    if "windowCenter" in one or "windowWidth" in one:
        if not ("windowCenter" in one and "windowWidth" in one):
            raise BadRequest("query parameters 'windowCenter' and 'windowWidth' go together")
        center, width = (
            _number("windowCenter", one["windowCenter"]),
            _number("windowWidth", one["windowWidth"]),
        )
        window = _checked_window("windowWidth", VoiWindow(center, width))
    rows, columns = (_side(name, one[name]) if name in one else None for name in ("rows", "columns"))
    region = _region(one["region"]) if "region" in one else None
    return RenderOptions(
        window=window,
        viewport=Viewport(columns, rows, None, region) if rows or columns or region else None,
        quality=_quality("imageQuality", one.get("imageQuality")),
        annotations=annotations,
        frame_number=_positive("frameNumber", one["frameNumber"]) if "frameNumber" in one else None,
    )


def _collect(params: Params, names: set[str]) -> tuple[dict[str, str], frozenset[str]]:
    """The single-valued parameters among ``names``, and the annotations, which may repeat."""
    one: dict[str, str] = {}
    annotations: set[str] = set()
    for name, value in params.items() if isinstance(params, Mapping) else params:
        if name == "annotation":
            annotations.update(item.strip().lower() for item in value.split(","))
        elif name in names:
            if name in one:
                raise BadRequest(f"query parameter {name!r} is given more than once")
            one[name] = value
    if annotations - ANNOTATIONS:
        unknown = sorted(annotations - ANNOTATIONS)[0]
        raise BadRequest(f"query parameter 'annotation': {unknown!r} is not patient or technique")
    return one, frozenset(annotations)


def _parse_window(text: str) -> VoiWindow:
    # PS3.18 §8.3.5.1.4: center,width,function; the function is taken in any case and
    # spelling (linear-exact, LINEAR_EXACT), and LINEAR when left out.
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise BadRequest(f"query parameter 'window': {text!r} is not center,width[,function]")
    function = _FUNCTIONS.get(parts[2].lower().replace("_", "-"), "") if len(parts) == 3 else "LINEAR"
    if not function:
        raise BadRequest(f"query parameter 'window': {parts[2]!r} is not linear, linear-exact or sigmoid")
    return _checked_window(
        "window", VoiWindow(_number("window", parts[0]), _number("window", parts[1]), function)
    )


def _checked_window(name: str, window: VoiWindow) -> VoiWindow:
    if not window.valid:
        # PS3.3 C.11.2.1.2.1: LINEAR needs a width of at least 1; C.11.2.1.3: the others > 0.
        raise BadRequest(
            f"query parameter {name!r}: width {window.width:g} is too small for {window.function}"
        )
    return window


def _viewport(text: str) -> Viewport:
    # PS3.18 §8.3.5.1.3: vw,vh[,sx,sy,sw,sh]; empty sx, sy mean 0, empty sw, sh the frame's edge.
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 6):
        raise BadRequest(f"query parameter 'viewport': {text!r} is not vw,vh[,sx,sy,sw,sh]")
    width, height = (_side("viewport", part) for part in parts[:2])
    if len(parts) == 2:
        return Viewport(width, height)
    sx, sy, sw, sh = (_integer("viewport", part) if part else None for part in parts[2:])
    if (sx or 0) < 0 or (sy or 0) < 0 or sw == 0 or sh == 0:
        raise BadRequest(f"query parameter 'viewport': {text!r} has an empty or negative source region")
    return Viewport(width, height, (sx or 0, sy or 0, sw, sh))


def _region(text: str) -> tuple[float, float, float, float]:
    parts = [_number("region", part) for part in text.split(",")]
    if len(parts) != 4 or not (0 <= parts[0] < parts[2] <= 1 and 0 <= parts[1] < parts[3] <= 1):
        raise BadRequest(f"query parameter 'region': {text!r} is not x1,y1,x2,y2 with 0 <= x1 < x2 <= 1")
    return parts[0], parts[1], parts[2], parts[3]


def _quality(name: str, text: str | None) -> int:
    quality = DEFAULT_QUALITY if text is None else _integer(name, text)
    if not 1 <= quality <= 100:
        raise BadRequest(f"query parameter {name!r}: {text!r} is not an integer from 1 to 100")
    return quality


def _side(name: str, text: str) -> int:
    value = _positive(name, text)
    if value > MAX_VIEWPORT_SIDE:
        raise BadRequest(f"query parameter {name!r}: {text!r} is larger than {MAX_VIEWPORT_SIDE} pixels")
    return value


def _positive(name: str, text: str) -> int:
    value = _integer(name, text)
    if value < 1:
        raise BadRequest(f"query parameter {name!r}: {text!r} is not a positive integer")
    return value


def _integer(name: str, text: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise BadRequest(f"query parameter {name!r}: {text!r} is not an integer")
    return int(text)


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"query parameter {name!r}: {text!r} is not a number")
    return value


def render(
    frame: DecodedFrame,
    description: PixelDescription,
    presentation: Presentation,
    media_type: str,
    options: RenderOptions | None = None,
    *,
    thumbnail: bool = False,
) -> bytes:
    """``frame`` rendered as ``media_type`` (one of :data:`RENDERED_MEDIA_TYPES`, else
    NotAcceptable, checked before any work): :func:`render_array`, then
    :func:`encode_image`."""
    kind = _media_type(media_type)
    options = options or RenderOptions()
    pixels = render_array(frame, description, presentation, options, thumbnail=thumbnail)
    return encode_image(pixels, kind, options.quality)


def render_array(
    frame: DecodedFrame,
    description: PixelDescription,
    presentation: Presentation,
    options: RenderOptions | None = None,
    *,
    thumbnail: bool = False,
) -> npt.NDArray[np.uint8]:
    """The rendered frame as 8-bit values, ``(rows, columns)`` for grayscale and
    ``(rows, columns, 3)`` RGB for color, cut to the source region and sized to the
    viewport; a ``thumbnail`` without a viewport fits :data:`THUMBNAIL_SIZE`, and is never
    enlarged. Raises BadRequest for a source region outside the frame, and
    UnsupportedPixelData for a photometric interpretation without a rendering."""
    options = options or RenderOptions()
    pixels, interpretation = frame.pixels, frame.photometric_interpretation
    region = _source_region(options.viewport, pixels.shape[0], pixels.shape[1])
    if interpretation in ("MONOCHROME1", "MONOCHROME2"):
        window = options.window
        rendered = _grayscale(pixels, region, presentation, window, interpretation == "MONOCHROME1")
    elif interpretation == "PALETTE COLOR":
        palette = presentation.palette
        if palette is None or pixels.ndim != 2:
            raise UnsupportedPixelData("PALETTE COLOR pixel data without Palette Color LUTs")
        rendered = _through_table(pixels, region, palette.lookup)
    elif interpretation in ("RGB", "YBR_FULL", "YBR_FULL_422") and pixels.ndim == 3:
        rendered = _color(pixels[region], interpretation, description.bits_stored)
    else:
        raise UnsupportedPixelData(f"photometric interpretation {interpretation} cannot be rendered")
    return _fit(rendered, options.viewport, thumbnail)


def encode_image(pixels: npt.NDArray[np.uint8], media_type: str, quality: int = DEFAULT_QUALITY) -> bytes:
    """8-bit grayscale or RGB ``pixels`` as a JPEG (``quality`` 1-100), PNG or GIF file."""
    kind = _media_type(media_type)
    if kind == "image/png":
        return encode_png(pixels)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    buffer = BytesIO()
    if kind == "image/jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "GIF")
    return buffer.getvalue()


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """8-bit grayscale ``(rows, columns)`` or RGB ``(rows, columns, 3)`` pixels as a PNG
    file (ISO/IEC 15948): one IDAT chunk of rows with the Up filter (§9.2, type 2, one
    vectorised subtraction), deflated at level 1 with zlib's run-length strategy.

    Pillow tries every filter on every row (adaptive filtering), which costs more than the
    compression itself: this is about three times faster for a 512x512 CT slice, and its
    output a little smaller than Pillow's at the same zlib level.

    >>> image = Image.open(BytesIO(encode_png(np.arange(12, dtype=np.uint8).reshape(3, 4))))
    >>> image.mode, image.size, np.asarray(image)[2].tolist()
    ('L', (4, 3), [8, 9, 10, 11])
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"cannot write {pixels.dtype} pixels of shape {pixels.shape} as PNG")
    rows, columns = pixels.shape[:2]
    flat = pixels.reshape(rows, -1)
    filtered = np.empty((rows, flat.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # the filter type byte opening each row: Up
    filtered[:1, 1:] = flat[:1]  # the row above the first is zero
    np.subtract(flat[1:], flat[:-1], out=filtered[1:, 1:])  # modulo 256, as §9.2 says
    deflate = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_RLE)
    data = deflate.compress(filtered.tobytes()) + deflate.flush()
    color_type = 0 if pixels.ndim == 2 else 2  # grayscale, truecolour (§11.2.2)
    header = struct.pack(">IIBBBBB", columns, rows, 8, color_type, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    # Length, type, data, and the CRC of type and data (ISO/IEC 15948 §5.3).
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _media_type(media_type: str) -> str:
    kind = media_type.split(";")[0].strip().lower()
    if kind not in RENDERED_MEDIA_TYPES:
        raise NotAcceptable(f"a frame renders as {', '.join(RENDERED_MEDIA_TYPES)}, not {media_type}")
    return kind


Region = tuple[slice, slice]


def _source_region(viewport: Viewport | None, rows: int, columns: int) -> Region:
    """The rows and columns of the source region (PS3.18 §8.3.5.1.3), flips as negative
    steps; WADO-URI's region is in fractions of the frame (PS3.18 §8.2.4)."""
    if viewport is not None and viewport.region is not None:
        x1, y1, x2, y2 = viewport.region
        x0, y0 = math.floor(x1 * columns), math.floor(y1 * rows)
        return slice(y0, max(math.ceil(y2 * rows), y0 + 1)), slice(x0, max(math.ceil(x2 * columns), x0 + 1))
    if viewport is None or viewport.source is None:
        return slice(None), slice(None)
    sx, sy, sw, sh = viewport.source
    ys, xs = _span(sy, sh, rows), _span(sx, sw, columns)
    if ys is None or xs is None:
        raise BadRequest(
            f"query parameter 'viewport': the source region is not within the {columns}x{rows} frame"
        )
    return ys, xs


def _span(start: int, length: int | None, size: int) -> slice | None:
    end = size if length is None else start + length
    if start >= size or not 0 <= end <= size:
        return None
    if end > start:
        return slice(start, end)
    # A negative width or height flips the region, which then lies before its start.
    return slice(start - 1, end - 1 if end > 0 else None, -1)


def _through_table(
    pixels: npt.NDArray[Any], region: Region, transform: Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
) -> npt.NDArray[np.uint8]:
    """``transform`` applied to the region of ``pixels``. For containers of up to 16 bits it
    is computed once for each value the container can hold, then looked up per pixel."""
    cut = pixels[region]
    if pixels.dtype.kind not in "iu" or pixels.dtype.itemsize > 2:
        return transform(cut.astype(np.float64)).astype(np.uint8)
    unsigned = np.dtype(f"u{pixels.dtype.itemsize}")
    # Every value, in the order of its bit pattern, so the pixels index the table directly.
    values = np.arange(1 << (8 * unsigned.itemsize), dtype=unsigned).view(pixels.dtype)
    table = transform(values).astype(np.uint8)
    return np.take(table, cut.view(unsigned), axis=0)


def _grayscale(
    pixels: npt.NDArray[Any],
    region: Region,
    presentation: Presentation,
    window: VoiWindow | None,
    invert: bool,
) -> npt.NDArray[np.uint8]:
    """Modality LUT, VOI LUT and MONOCHROME1 inversion (PS3.4 N.2.1) to 8 bits."""
    window = window or presentation.window
    span: list[float] = []
    if window is None and presentation.voi_lut is None:
        # No VOI from request or instance: span the values present after the Modality LUT.
        low, high = int(pixels.min()), int(pixels.max())
        present = np.arange(low, high + 1) if high - low < 1 << 17 else np.array([low, high])
        modality = _modality(present.astype(np.float64), presentation)
        span = [float(modality.min()), float(modality.max())]
    if (
        presentation.modality_lut is None
        and (window is not None or presentation.voi_lut is None)
        and pixels.dtype.kind in "iu"
        and pixels.dtype.itemsize <= 2
    ):
        # Rescale and a window only: the table is shared by every frame rendered alike (the
        # slices of a series, one request after another).
        if window is None and span[1] > span[0]:
            window = VoiWindow((span[0] + span[1]) / 2, span[1] - span[0], "LINEAR_EXACT")
        slope, intercept = presentation.rescale_slope, presentation.rescale_intercept
        table = _linear_table(pixels.dtype.str, slope, intercept, window, invert)
        return np.take(table, pixels[region].view(_table_index(pixels.dtype)), axis=0)

    def transform(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        modality = _modality(values.astype(np.float64), presentation)
        if window is not None:
            output = _apply_window(modality, window)
        elif presentation.voi_lut is not None:
            lut = presentation.voi_lut
            output = lut.lookup(modality) * (255 / ((1 << lut.bits) - 1))
        elif span[1] > span[0]:
            output = _apply_window(
                modality, VoiWindow((span[0] + span[1]) / 2, span[1] - span[0], "LINEAR_EXACT")
            )
        else:
            output = np.zeros_like(modality)
        output = np.clip(np.rint(output), 0, 255)
        return 255 - output if invert else output

    return _through_table(pixels, region, transform)


def _table_index(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The unsigned type whose values index a table over every bit pattern of ``dtype``."""
    return np.dtype(f"u{dtype.itemsize}")


@functools.lru_cache(maxsize=64)  # 64 KiB a table of 16-bit values: at most 4 MiB
def _linear_table(
    dtype: str, slope: float, intercept: float, window: VoiWindow | None, invert: bool
) -> npt.NDArray[np.uint8]:
    """Rescale (PS3.3 C.11.1), ``window`` (C.11.2; None: all black) and inversion of
    every value of the integer type ``dtype``, in the order of its bit patterns."""
    values = np.arange(1 << (8 * np.dtype(dtype).itemsize), dtype=_table_index(np.dtype(dtype)))
    modality = values.view(dtype).astype(np.float64) * slope + intercept
    output = _apply_window(modality, window) if window is not None else np.zeros_like(modality)
    output = np.clip(np.rint(output), 0, 255)
    table = (255 - output if invert else output).astype(np.uint8)
    table.flags.writeable = False  # shared by the rendering threads
    return table


def _modality(values: npt.NDArray[np.float64], presentation: Presentation) -> npt.NDArray[np.float64]:
    # PS3.3 C.11.1: a Modality LUT Sequence replaces Rescale Slope and Intercept.
    if presentation.modality_lut is not None:
        return presentation.modality_lut.lookup(values).astype(np.float64)
    return values * presentation.rescale_slope + presentation.rescale_intercept


def _apply_window(x: npt.NDArray[np.float64], window: VoiWindow) -> npt.NDArray[np.float64]:
    """The VOI LUT Functions of PS3.3 C.11.2.1.2-3 onto 0-255, before rounding."""
    center, width = window.center, window.width
    if window.function == "SIGMOID":
        # C.11.2.1.3.1, the exponent bounded where the result is 0 or 255 anyway.
        return 255 / (1 + np.exp(np.clip(-4 * (x - center) / width, -700, 700)))
    if window.function == "LINEAR_EXACT":
        return np.clip(((x - center) / width + 0.5) * 255, 0, 255)  # C.11.2.1.3.2
    if width == 1:
        # C.11.2.1.2.1 with w = 1: a threshold at c - 0.5.
        return np.where(x <= center - 0.5, 0.0, 255.0)
    return np.clip(((x - (center - 0.5)) / (width - 1) + 0.5) * 255, 0, 255)  # C.11.2.1.2.1


def _color(pixels: npt.NDArray[Any], interpretation: str, bits_stored: int) -> npt.NDArray[np.uint8]:
    if interpretation != "RGB":
        if pixels.dtype != np.uint8:
            raise UnsupportedPixelData(f"{interpretation} frames of more than 8 bits cannot be rendered")
        # PS3.3 C.7.6.3.1.2: YBR_FULL_422 decodes to full-resolution YBR_FULL.
        return convert_color_space(pixels, "YBR_FULL", "RGB")
    if bits_stored > 8:
        return (pixels >> (bits_stored - 8)).astype(np.uint8)
    if bits_stored < 8:
        return (pixels.astype(np.uint16) * 255 // ((1 << bits_stored) - 1)).astype(np.uint8)
    return pixels.astype(np.uint8, copy=False)


def output_size(
    options: RenderOptions, rows: int, columns: int, *, thumbnail: bool = False
) -> tuple[int, int]:
    """``(width, height)`` of the image that rendering a ``rows`` x ``columns`` frame with
    ``options`` makes, known before any pixel is decoded; BadRequest when that is more
    than :data:`MAX_RENDERED_PIXELS` (one viewport side given alone, as WADO-URI allows,
    can ask for a huge image of a narrow frame).

    >>> output_size(RenderOptions(viewport=Viewport(256, 256)), 512, 1024)
    (256, 128)
    >>> output_size(RenderOptions(), 512, 512, thumbnail=True)
    (128, 128)
    """
    height, width = _region_shape(options.viewport, rows, columns)
    viewport = options.viewport
    box = (viewport.width, viewport.height) if viewport else (None, None)
    if thumbnail and box == (None, None):
        box = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    scales = [bound / side for bound, side in zip(box, (width, height), strict=True) if bound is not None]
    scale = min(scales, default=1.0)
    if thumbnail:
        scale = min(scale, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale > 1 and size[0] * size[1] > MAX_RENDERED_PIXELS:
        raise BadRequest(
            f"the requested viewport would make a {size[0]}x{size[1]} image; "
            f"at most {MAX_RENDERED_PIXELS} pixels are rendered"
        )
    return size


def working_memory(
    rows: int, columns: int, samples: int, bits_allocated: int, output: tuple[int, int]
) -> int:
    """An upper estimate of the bytes rendering one frame holds at once: the decoded frame,
    a float working copy of it (color conversion), and the output with its resampling
    buffers. Used to bound how much all renderings of a process may take together.

    >>> working_memory(512, 512, 1, 16, (512, 512)) / (1 << 20)
    1.75
    """
    pixels = rows * columns * samples
    out = output[0] * output[1] * max(samples, 3 if samples > 1 else 1)
    return pixels * max(1, (bits_allocated + 7) // 8) + pixels * (8 if samples > 1 else 1) + out * 4


def _region_shape(viewport: Viewport | None, rows: int, columns: int) -> tuple[int, int]:
    """``(rows, columns)`` of the source region, as :func:`_source_region` cuts it."""
    ys, xs = _source_region(viewport, rows, columns)
    return len(range(*ys.indices(rows))), len(range(*xs.indices(columns)))


def _fit(pixels: npt.NDArray[np.uint8], viewport: Viewport | None, thumbnail: bool) -> npt.NDArray[np.uint8]:
    """Scale to fit the viewport, keeping the aspect ratio (PS3.18 §8.3.5.1.3); a thumbnail
    fits :data:`THUMBNAIL_SIZE` by default and is never enlarged."""
    height, width = pixels.shape[:2]
    # The source region is already cut: size it as a whole frame of that shape.
    whole = Viewport(viewport.width, viewport.height) if viewport else None
    size = output_size(RenderOptions(viewport=whole), height, width, thumbnail=thumbnail)
    scale = size[0] / width
    if size == (width, height):
        return np.ascontiguousarray(pixels)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if scale < 1:
        # Box-reduce first, to within twice the size, and resample the rest: about twice as
        # fast as from the full frame, still antialiased (Pillow's thumbnail() does the same).
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    else:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image)
