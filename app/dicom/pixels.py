"""One frame of Pixel Data, decoded from the bytes the archive stores for it.

A frame is handed over as stored: the native frame's bytes (PS3.5 §8.1.1), or the
concatenated fragments of one encapsulated frame (PS3.5 §8.2, Annex A.4). Decoding goes
through pydicom's pixel decoders and the pylibjpeg plugins one frame at a time, so a
multi-frame instance is never decoded whole to serve one frame.

:class:`PixelDescription` is the Image Pixel Module (PS3.3 C.7.6.3) plus the transfer
syntax, read from a pydicom Dataset or from DICOM JSON (PS3.18 Annex F).
:func:`decode_frame` gives a numpy array; :func:`native_frame_bytes` re-encodes a frame as
Explicit VR Little Endian native bytes for transcoding (PS3.5 §A.2).

Everything here is CPU-bound and blocking: run it in a worker thread. It keeps no state,
so concurrent calls are safe.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from app.errors import NotAcceptable

__all__ = [
    "COLOR",
    "DecodedFrame",
    "Lut",
    "NativeFrame",
    "PixelDescription",
    "Presentation",
    "UnsupportedPixelData",
    "VoiWindow",
    "decode_frame",
    "json_value",
    "native_frame_bytes",
]

#: Photometric interpretations of three-sample images (PS3.3 C.7.6.3.1.2) that the decoders
#: deliver as RGB or as full-resolution YBR_FULL.
COLOR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})
_GRAYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"})
# What pydicom's decoders and plugins raise on data they cannot decode.
_DECODE_ERRORS = (
    RuntimeError, ValueError, NotImplementedError, AttributeError, KeyError, IndexError,
    TypeError, EOFError, OverflowError, struct.error,
)  # fmt: skip


class UnsupportedPixelData(NotAcceptable):
    """The stored pixel data cannot be decoded or rendered: no decoder for its transfer
    syntax, a photometric interpretation without a rendering, inconsistent Image Pixel
    attributes, or a corrupt codestream.

    A 406: the archive holds the instance but cannot produce the requested representation
    of it (PS3.18 §8.7.3); the client can still retrieve it as stored."""


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel Module attributes (PS3.3 C.7.6.3) that decoding needs, and the
    transfer syntax the frames are encoded with.

    ``pixel_vr`` is the VR of Pixel Data: it matters only for 8-bit data in Explicit VR Big
    Endian, where OW swaps each pair of bytes (PS3.5 §A.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    number_of_frames: int
    transfer_syntax_uid: str
    pixel_vr: str = "OW"

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise UnsupportedPixelData(f"cannot decode the pixel data: {problem}")

    def _problem(self) -> str | None:
        if self.rows < 1 or self.columns < 1:
            return f"Rows {self.rows} and Columns {self.columns} must be positive"
        if self.samples_per_pixel not in (1, 3):
            return f"Samples per Pixel {self.samples_per_pixel} is neither 1 nor 3"
        if self.bits_allocated not in (1, 8, 16, 32):
            return f"Bits Allocated {self.bits_allocated} is not 1, 8, 16 or 32"
        if not 1 <= self.bits_stored <= self.high_bit + 1 <= self.bits_allocated:
            # PS3.5 §8.1.1: the stored bits lie within the allocated ones, ending at High Bit.
            return (
                f"Bits Stored {self.bits_stored} and High Bit {self.high_bit} do not fit in "
                f"Bits Allocated {self.bits_allocated}"
            )
        if self.pixel_representation not in (0, 1):
            return f"Pixel Representation {self.pixel_representation} is neither 0 nor 1"
        if self.number_of_frames < 1:
            return f"Number of Frames {self.number_of_frames} is not positive"
        return None

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame; YBR_FULL_422 stores two samples per pixel (PS3.3
        C.7.6.3.1.2) and 1-bit frames are rounded up to a whole byte."""
        samples = 2 if self.photometric_interpretation == "YBR_FULL_422" else self.samples_per_pixel
        return (self.rows * self.columns * samples * self.bits_allocated + 7) // 8

    @classmethod
    def from_dataset(cls, ds: Dataset, transfer_syntax_uid: str | None = None) -> PixelDescription:
        """From a data set; the transfer syntax from its File Meta Information unless given."""
        meta = getattr(ds, "file_meta", None)
        uid = transfer_syntax_uid or (meta.get("TransferSyntaxUID") if meta is not None else None)
        values = {keyword: ds.get(keyword) for keyword in _KEYWORDS.values()}
        vr = str(ds["PixelData"].VR) if "PixelData" in ds else None
        return cls._build(values, uid, vr)

    @classmethod
    def from_json(
        cls, metadata: Mapping[str, Any], transfer_syntax_uid: str | None = None
    ) -> PixelDescription:
        """From DICOM JSON (PS3.18 Annex F); the transfer syntax from (0002,0010) when the
        metadata carries it, else ``transfer_syntax_uid``."""
        uid = json_value(metadata, "00020010") or transfer_syntax_uid
        values = {keyword: json_value(metadata, tag) for tag, keyword in _KEYWORDS.items()}
        pixel = metadata.get("7FE00010")
        vr = pixel.get("vr") if isinstance(pixel, Mapping) else None
        return cls._build(values, uid, vr)

    @classmethod
    def _build(cls, values: dict[str, Any], uid: Any, vr: str | None) -> PixelDescription:
        if not uid:
            raise ValueError("the transfer syntax of the pixel data is not known")
        for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
            if values[keyword] in (None, ""):
                raise UnsupportedPixelData(f"not an image: it has no {keyword}")
        try:
            bits_allocated = int(values["BitsAllocated"])
            bits_stored = _integer(values["BitsStored"], bits_allocated)
            return cls(
                rows=int(values["Rows"]),
                columns=int(values["Columns"]),
                samples_per_pixel=_integer(values["SamplesPerPixel"], 1),
                bits_allocated=bits_allocated,
                bits_stored=bits_stored,
                high_bit=_integer(values["HighBit"], bits_stored - 1),
                pixel_representation=_integer(values["PixelRepresentation"], 0),
                photometric_interpretation=str(values["PhotometricInterpretation"]).strip().upper(),
                planar_configuration=_integer(values["PlanarConfiguration"], 0),
                number_of_frames=_integer(values["NumberOfFrames"], 1),
                transfer_syntax_uid=str(uid),
                pixel_vr=vr or ("OW" if bits_allocated > 8 else "OB"),
            )
        except (TypeError, ValueError) as exc:
            raise UnsupportedPixelData(f"invalid Image Pixel attributes: {exc}") from exc


# The attributes of :class:`PixelDescription`, by DICOM JSON tag (PS3.3 C.7.6.3, C.7.6.6).
_KEYWORDS = {
    "00280002": "SamplesPerPixel", "00280004": "PhotometricInterpretation",
    "00280006": "PlanarConfiguration", "00280008": "NumberOfFrames", "00280010": "Rows",
    "00280011": "Columns", "00280100": "BitsAllocated", "00280101": "BitsStored",
    "00280102": "HighBit", "00280103": "PixelRepresentation",
}  # fmt: skip


def json_value(metadata: Mapping[str, Any], tag: str) -> Any:
    """The first value of the top-level element ``tag`` (``"00280010"``) in DICOM JSON, or
    None when the element is absent or empty (PS3.18 §F.2.2)."""
    element = metadata.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    return values[0] if isinstance(values, list) and values else None


def _integer(value: Any, default: int) -> int:
    # DICOM JSON carries IS values as numbers or, from some writers, as strings (PS3.18 §F.2.3).
    return default if value in (None, "") else int(value)


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """A decoded frame: ``(rows, columns)`` or ``(rows, columns, samples)`` with samples
    interleaved whatever the stored Planar Configuration, in native byte order, each value
    within Bits Stored (masked, or sign-extended when Pixel Representation is 1).

    ``photometric_interpretation`` is that of the array, which differs from the stored one
    where decoding converts it: YBR_FULL and YBR_FULL_422 become RGB unless the frame was
    decoded with ``as_rgb=False`` (and native YBR_FULL_422 then becomes YBR_FULL, its
    chroma upsampled); JPEG 2000's YBR_ICT and YBR_RCT always become RGB."""

    pixels: npt.NDArray[Any]
    photometric_interpretation: str


@dataclass(frozen=True)
class NativeFrame:
    """A frame as Explicit VR Little Endian native bytes (PS3.5 §8.1.1, §A.2), and the
    Image Pixel attributes that now describe it."""

    data: bytes
    description: PixelDescription


def decode_frame(
    data: bytes | bytearray | memoryview, description: PixelDescription, *, as_rgb: bool = True
) -> DecodedFrame:
    """Decode one stored frame (see the module docstring) into a numpy array.

    Raises UnsupportedPixelData when no installed decoder handles the transfer syntax or
    the frame's bytes cannot be decoded."""
    interpretation = description.photometric_interpretation
    if interpretation not in (COLOR if description.samples_per_pixel == 3 else _GRAYSCALE):
        raise UnsupportedPixelData(
            f"photometric interpretation {interpretation} with {description.samples_per_pixel} "
            "samples per pixel is not supported"
        )
    syntax = UID(description.transfer_syntax_uid)
    try:
        decoder = get_decoder(syntax)
        if syntax.is_encapsulated:
            source: bytes | bytearray | memoryview = encapsulate([bytes(data)], has_bot=False)
        else:
            source = _native_source(data, description, syntax)
        options = _decoder_options(description)
        options["as_rgb"] = as_rgb
        # A frame with an unusual High Bit is extracted below, not by the decoder (which
        # assumes High Bit = Bits Stored - 1).
        realigned = not syntax.is_encapsulated and description.high_bit != description.bits_stored - 1
        if realigned:
            options["correct_unused_bits"] = False
        try:
            array, properties = decoder.as_array(source, index=0, validate=False, **options)
        except _DECODE_ERRORS:
            repaired = _sequential_scan_repaired(data) if syntax in _SEQUENTIAL_JPEG else None
            if repaired is None:
                raise
            source = encapsulate([repaired], has_bot=False)
            array, properties = decoder.as_array(source, index=0, validate=False, **options)
    except _DECODE_ERRORS as exc:
        raise UnsupportedPixelData(
            f"cannot decode a {syntax.name} frame: {str(exc).splitlines()[0]}"
        ) from exc
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if realigned:
        array = _realign(array, description)
    return DecodedFrame(array, str(properties["photometric_interpretation"]))


def native_frame_bytes(data: bytes | bytearray | memoryview, description: PixelDescription) -> NativeFrame:
    """A stored frame as Explicit VR Little Endian native bytes, for transcoding to
    ``transfer-syntax=1.2.840.10008.1.2.1``.

    Little-endian native frames come back unchanged. Others are decoded: the result has
    interleaved samples (Planar Configuration 0) and, for JPEG-family YBR frames, RGB
    values (as DCMTK and pydicom decompress them), which the returned description says.
    The values of a lossy frame are those decoded, so the result is lossy too.
    """
    syntax = UID(description.transfer_syntax_uid)
    if not syntax.is_encapsulated and syntax.is_little_endian:
        raw = bytes(_native_source(data, description, syntax))
        return NativeFrame(raw, replace(description, transfer_syntax_uid=ExplicitVRLittleEndian))
    # A native big-endian frame keeps its color space; a compressed one is made RGB.
    frame = decode_frame(data, description, as_rgb=syntax.is_encapsulated)
    pixels = frame.pixels
    if description.bits_allocated == 1:
        encoded = pack_bits(pixels, pad=False)
    else:
        container = np.dtype(f"<{'i' if pixels.dtype.kind == 'i' else 'u'}{description.bits_allocated // 8}")
        encoded = pixels.astype(container, copy=False).tobytes()
    samples = pixels.shape[2] if pixels.ndim == 3 else 1
    native = replace(
        description,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        photometric_interpretation=frame.photometric_interpretation,
        samples_per_pixel=samples,
        planar_configuration=0,
        pixel_vr="OW" if description.bits_allocated > 8 else "OB",
    )
    return NativeFrame(encoded, native)


#: JPEG Baseline and Extended: sequential DCT processes (ITU-T T.81 §4.11, PS3.5 §A.4.1).
_SEQUENTIAL_JPEG = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
_SOF_SEQUENTIAL = (0xC0, 0xC1)  # baseline, extended sequential (Huffman)


def _sequential_scan_repaired(data: bytes | bytearray | memoryview) -> bytes | None:
    """A sequential DCT codestream whose scan headers carry the only values T.81 §B.2.3
    allows there (Ss 0, Se 63, Ah and Al 0), or None when there is nothing to repair.

    Some writers leave other values in those fields (pydicom's 12-bit ``JPEG-lossy.dcm``
    has Se 0); the IJG decoder that DCMTK uses warns and ignores them, libjpeg refuses the
    file. Rewriting them to the values a sequential scan means changes nothing else."""
    out = bytearray(data)
    position, sequential, changed = 2, False, False
    while position + 4 <= len(out) and out[position] == 0xFF:
        marker = out[position + 1]
        if marker == 0xFF:  # fill byte (T.81 §B.1.1.2)
            position += 1
            continue
        length = int.from_bytes(out[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sequential = marker in _SOF_SEQUENTIAL
        if marker == 0xDA:  # start of scan: header, then entropy-coded data
            if not sequential or position + 5 > len(out):
                return None
            fields = position + 5 + 2 * out[position + 4]
            if fields + 3 > len(out):
                return None
            if out[fields : fields + 3] != b"\x00\x3f\x00":
                out[fields : fields + 3] = b"\x00\x3f\x00"
                changed = True
            position = _next_marker(out, position + 2 + length)
            continue
        position += 2 + length
    return bytes(out) if changed else None


def _next_marker(data: bytearray, position: int) -> int:
    """The next marker after entropy-coded data: 0xFF not followed by a stuffed 0x00 or a
    restart marker (T.81 §B.1.1.5)."""
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return len(data)
        following = data[position + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7 and following != 0xFF:
            return position
        position += 1 if following == 0xFF else 2


def _native_source(
    data: bytes | bytearray | memoryview, description: PixelDescription, syntax: UID
) -> bytes | bytearray | memoryview:
    expected = description.frame_length
    if len(data) < expected:
        raise UnsupportedPixelData(f"the frame has {len(data)} bytes, {expected} expected")
    if syntax == ExplicitVRBigEndian and description.bits_allocated == 8 and description.pixel_vr == "OW":
        # 8-bit OW in big endian swaps byte pairs (PS3.5 §A.3), so an odd-length frame's
        # last sample lies after the padding byte: pass the frame with that byte. Odd-length
        # frames after the first start mid-pair and cannot be decoded on their own.
        needed = expected + expected % 2
        return bytes(data[:needed]).ljust(needed, b"\0")
    return data[:expected] if len(data) > expected else data


def _decoder_options(description: PixelDescription) -> dict[str, Any]:
    # pydicom's decoding options carry the Image Pixel attributes under the same names.
    options = {name: getattr(description, name) for name in _DECODER_OPTIONS}
    return options | {"number_of_frames": 1, "pixel_keyword": "PixelData"}


_DECODER_OPTIONS = (
    "rows", "columns", "samples_per_pixel", "bits_allocated", "bits_stored", "pixel_representation",
    "photometric_interpretation", "planar_configuration", "pixel_vr",
)  # fmt: skip


def _realign(array: npt.NDArray[Any], description: PixelDescription) -> npt.NDArray[Any]:
    """Extract Bits Stored bits ending at High Bit (PS3.5 §8.1.1, a layout that later
    editions retired) and sign-extend them when Pixel Representation is 1."""
    unsigned = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    shift = description.high_bit + 1 - description.bits_stored
    mask = (1 << description.bits_stored) - 1
    values = (unsigned >> shift) & mask
    if description.pixel_representation == 0:
        return values.astype(unsigned.dtype, copy=False)
    signed = values.astype(np.dtype(f"i{array.dtype.itemsize}"))
    spare = 8 * array.dtype.itemsize - description.bits_stored
    return (signed << spare) >> spare


@dataclass(frozen=True)
class VoiWindow:
    """A VOI window: Window Center, Window Width and VOI LUT Function (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: str = "LINEAR"

    @property
    def valid(self) -> bool:
        # C.11.2.1.2.1: LINEAR needs a width of at least 1; C.11.2.1.3: the others above 0.
        if self.function == "LINEAR":
            return self.width >= 1
        return self.function in ("LINEAR_EXACT", "SIGMOID") and self.width > 0


@dataclass(frozen=True, eq=False)
class Lut:
    """A lookup table (PS3.3 C.11.1.1.1): ``data[i]`` is the output for input ``first + i``;
    inputs beyond either end take the end's entry. ``bits`` is the declared entry depth."""

    first: int
    bits: int
    data: npt.NDArray[Any]

    def lookup(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        index = np.clip(np.rint(values).astype(np.int64) - self.first, 0, len(self.data) - 1)
        result: npt.NDArray[Any] = self.data[index]
        return result


@dataclass(frozen=True, eq=False)
class Presentation:
    """What turns one frame's stored values into presentation values: the Modality LUT
    (PS3.3 C.11.1), the instance's VOI LUT (C.11.2) and, for PALETTE COLOR, the Palette
    Color LUTs (C.7.6.3.1.5-6, segmented ones C.7.9.2) as a table of 8-bit RGB entries.

    Rescale and window come from the frame's Pixel Value Transformation and Frame VOI LUT
    functional groups (PS3.3 C.7.6.16.2.9-10) in enhanced multi-frame images, else from
    the top level; only the first window and the first LUT of each sequence are kept."""

    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: Lut | None = None
    window: VoiWindow | None = None
    voi_lut: Lut | None = None
    palette: Lut | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, frame: int = 0) -> Presentation:
        """From a data set, for the frame of 0-based index ``frame``."""
        little = ds.original_encoding[1]
        return cls._read(ds, frame, little is not False)

    @classmethod
    def from_json(
        cls,
        metadata: Mapping[str, Any],
        frame: int = 0,
        *,
        bulk: Mapping[str, bytes] | None = None,
        transfer_syntax_uid: str | None = None,
    ) -> Presentation:
        """From DICOM JSON. LUT data sent as BulkDataURI (see :meth:`bulk_data_uris`) is
        taken from ``bulk``, by URI; a LUT whose data is missing is ignored, except a
        palette, which raises UnsupportedPixelData. OW LUT data is in the byte order of
        the transfer syntax (Explicit VR Big Endian's, PS3.5 §A.3, or little endian)."""
        subset = {tag: metadata[tag] for tag in _PRESENTATION_TAGS if tag in metadata}
        per_frame = (metadata.get("52009230") or {}).get("Value") or []
        if 0 <= frame < len(per_frame):
            subset["52009230"] = {"vr": "SQ", "Value": [per_frame[frame]]}
        supplied = bulk or {}
        ds = Dataset.from_json(subset, lambda uri: supplied.get(uri))
        uid = json_value(metadata, "00020010") or transfer_syntax_uid
        return cls._read(ds, 0, uid != ExplicitVRBigEndian)

    @staticmethod
    def bulk_data_uris(metadata: Mapping[str, Any]) -> list[str]:
        """The BulkDataURIs of the LUT data that :meth:`from_json` needs in ``bulk``."""
        elements = [metadata.get(tag) for tag in _PALETTE_DATA]
        for sequence in ("00283000", "00283010"):
            items = (metadata.get(sequence) or {}).get("Value") or [{}]
            elements.append(items[0].get("00283006"))
        return [e["BulkDataURI"] for e in elements if isinstance(e, Mapping) and "BulkDataURI" in e]

    @classmethod
    def _read(cls, ds: Dataset, frame: int, little: bool) -> Presentation:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        shared = ds.get("SharedFunctionalGroupsSequence") or []
        groups = ([per_frame[frame]] if 0 <= frame < len(per_frame) else []) + list(shared[:1])
        transform = _group_item(groups, "PixelValueTransformationSequence", "RescaleSlope") or ds
        voi = _group_item(groups, "FrameVOILUTSequence", "WindowCenter") or ds
        signed = ds.get("PixelRepresentation") == 1
        palette = None
        if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
            palette = _palette(ds, little, signed)
        return cls(
            rescale_slope=_float(transform.get("RescaleSlope"), 1.0),
            rescale_intercept=_float(transform.get("RescaleIntercept"), 0.0),
            modality_lut=_lut(ds, "ModalityLUTSequence", little, signed),
            window=_window(voi),
            voi_lut=_lut(ds, "VOILUTSequence", little, signed),
            palette=palette,
        )


# The top-level elements :class:`Presentation` reads (PS3.3 C.7.6.3, C.11.1, C.11.2) and
# the Shared Functional Groups Sequence; the frame's per-frame item is added apart.
_PALETTE_DATA = ("00281201", "00281202", "00281203", "00281221", "00281222", "00281223")
_PRESENTATION_TAGS = (
    "00280004", "00280103", "00281050", "00281051", "00281052", "00281053", "00281056",
    "00281101", "00281102", "00281103", *_PALETTE_DATA, "00283000", "00283010", "52009229",
)  # fmt: skip
_PALETTE_KEYWORDS = tuple(
    f"{segmented}{color}PaletteColorLookupTable{part}"
    for color in ("Red", "Green", "Blue")
    for segmented, part in (("", "Descriptor"), ("", "Data"), ("Segmented", "Data"))
)


def _group_item(groups: list[Dataset], sequence: str, keyword: str) -> Dataset | None:
    for group in groups:
        items = group.get(sequence) or []
        if items and keyword in items[0]:
            return items[0]  # type: ignore[no-any-return]
    return None


def _float(value: Any, default: float) -> float:
    # Window Center and Width may hold several windows (VM 1-n): the first is the default.
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if value else None
    try:
        number = float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _window(ds: Dataset) -> VoiWindow | None:
    center, width = _float(ds.get("WindowCenter"), math.nan), _float(ds.get("WindowWidth"), math.nan)
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    window = VoiWindow(center, width, function)
    # An invalid window in the instance is ignored: the next VOI source applies.
    return window if math.isfinite(center) and math.isfinite(width) and window.valid else None


def _lut(ds: Dataset, sequence: str, little: bool, signed: bool) -> Lut | None:
    items = ds.get(sequence) or []
    item = items[0] if items else Dataset()
    descriptor, data = item.get("LUTDescriptor"), item.get("LUTData")
    if descriptor is None or len(descriptor) != 3 or data is None or len(data) == 0:
        return None
    count, first, bits = _descriptor(descriptor, signed)
    if isinstance(data, bytes):
        # OW: 16-bit entries (PS3.3 C.11.1.1.1), or 8-bit ones packed when the length says so
        table = np.frombuffer(data, "u1" if len(data) == count else ("<u2" if little else ">u2"))
    else:
        table = np.asarray(list(data) if isinstance(data, Sequence) else [data], dtype=np.int64)
    return Lut(first, bits, table[:count].astype(np.float64))


def _descriptor(descriptor: Sequence[int], signed: bool) -> tuple[int, int, int]:
    """Entries, first value mapped and bits of a LUT Descriptor (PS3.3 C.11.1.1.1): 0
    entries means 65536, and the first value mapped is SS when the pixels are signed."""
    count, first, bits = int(descriptor[0]) or 65536, int(descriptor[1]), int(descriptor[2])
    return count, first - 65536 if signed and first >= 32768 else first, bits


def _palette(ds: Dataset, little: bool, signed: bool) -> Lut:
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is None or len(descriptor) != 3:
        raise UnsupportedPixelData("PALETTE COLOR without a Palette Color Lookup Table Descriptor")
    count, first, bits = _descriptor(descriptor, signed)
    tables = Dataset()
    for keyword in _PALETTE_KEYWORDS:
        if ds.get(keyword) not in (None, b"", []):
            tables[keyword] = ds[keyword]
    tables.set_original_encoding(False, little)
    try:
        entries = apply_color_lut(np.arange(first, first + count, dtype=np.int64), tables)[:, :3]
    except _DECODE_ERRORS as exc:
        raise UnsupportedPixelData(f"unusable Palette Color LUTs: {exc}") from exc
    # 16-bit entries span 0-65535 (C.7.6.3.1.6); 8-bit ones may come in 16-bit words.
    if entries.dtype.itemsize > 1 and (bits > 8 or int(entries.max()) > 255):
        entries = entries >> 8
    return Lut(first, 8, entries.astype(np.uint8))
