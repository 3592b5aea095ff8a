"""The representations each DICOMweb resource offers (PS3.18 §8.7.3, Table 8.7.3-1), and
the choice among them for a request's Accept header."""

from __future__ import annotations

from dataclasses import dataclass

from app.dicom.media import MediaType, MediaTypes, multipart_related, negotiate, parse_accept
from app.dicom.transfer_syntaxes import DEFAULT_FOR_MEDIA_TYPE, EXPLICIT_VR_LITTLE_ENDIAN, FRAME_MEDIA_TYPES
from app.errors import NotAcceptable

DICOM_JSON = MediaTypes.DICOM_JSON.value

_JSON_OFFERS = [MediaType("application", "dicom+json"), MediaType("application", "json")]
_DICOM_OFFERS = [multipart_related(MediaTypes.DICOM.value)]
_BULK_OFFERS = [multipart_related(MediaTypes.OCTET_STREAM.value), MediaType("application", "octet-stream")]


def negotiate_json(accept: str | None) -> str:
    """``application/dicom+json`` (or ``application/json`` if that is all the client takes)."""
    return negotiate(parse_accept(accept), _JSON_OFFERS).offer.essence


@dataclass(frozen=True)
class DicomChoice:
    #: Acceptable transfer syntaxes in preference order; ``*`` means "as stored".
    transfer_syntaxes: list[str]


def negotiate_dicom(accept: str | None, as_stored: bool = False) -> DicomChoice:
    """``multipart/related; type="application/dicom"``. A media range without a
    ``transfer-syntax`` parameter means Explicit VR Little Endian (PS3.18 §8.7.3, Table
    8.7.3-2); ``as_stored`` makes it mean "as stored" (``*``), as PS3.18 did before 2016c.

    >>> negotiate_dicom('multipart/related; type="application/dicom"').transfer_syntaxes
    ['1.2.840.10008.1.2.1']
    >>> negotiate_dicom('multipart/related; type="application/dicom"; transfer-syntax=*').transfer_syntaxes
    ['*']
    >>> negotiate_dicom(None, as_stored=True).transfer_syntaxes
    ['*']
    """
    chosen = negotiate(parse_accept(accept), _DICOM_OFFERS)
    return DicomChoice(chosen.transfer_syntaxes(default="*" if as_stored else EXPLICIT_VR_LITTLE_ENDIAN))


def negotiate_bulk(accept: str | None) -> bool:
    """True for ``multipart/related; type="application/octet-stream"`` (the PS3.18 default),
    False for a single ``application/octet-stream`` body."""
    chosen = negotiate(parse_accept(accept), _BULK_OFFERS)
    return chosen.offer.type == "multipart"


@dataclass(frozen=True)
class FrameChoice:
    #: The root type of the multipart response and of each part.
    media_type: str
    #: The transfer syntax each frame is sent in.
    transfer_syntax: str
    #: True when compressed frames must be decoded to be sent (as Explicit VR Little Endian).
    decode: bool = False


def negotiate_frames(accept: str | None, stored: str, encapsulated: bool) -> FrameChoice:
    """How to send the frames of an instance stored in ``stored`` (PS3.18 §8.7.3.3.2).

    Frames go as stored when the client takes that: native frames as
    ``application/octet-stream`` in Explicit VR Little Endian (whatever native syntax holds
    them), compressed frames as ``application/octet-stream`` or their image media type
    when the client takes the stored syntax (``transfer-syntax=*`` or that UID). Compressed
    frames are decoded to Explicit VR Little Endian for a client that asks for that, or for
    ``application/octet-stream`` without naming a syntax (its default). Nothing else can
    be produced (406)."""
    offers = [multipart_related(MediaTypes.OCTET_STREAM.value)]
    image_type = FRAME_MEDIA_TYPES.get(stored) if encapsulated else None
    if image_type:
        offers.append(multipart_related(image_type))
    chosen = negotiate(parse_accept(accept), offers)
    root = chosen.offer.params["type"]
    available = stored if encapsulated else EXPLICIT_VR_LITTLE_ENDIAN
    for syntax in chosen.transfer_syntaxes(default=DEFAULT_FOR_MEDIA_TYPE[root]):
        if syntax in ("*", available):
            return FrameChoice(root, available)
        if syntax == EXPLICIT_VR_LITTLE_ENDIAN and root == MediaTypes.OCTET_STREAM.value:
            return FrameChoice(root, EXPLICIT_VR_LITTLE_ENDIAN, decode=True)
    raise NotAcceptable(
        f"the frames are stored as {stored}; the archive cannot convert them to "
        f"{', '.join(chosen.transfer_syntaxes(default=DEFAULT_FOR_MEDIA_TYPE[root]))}"
    )


_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif")


@dataclass(frozen=True)
class RenderedChoice:
    #: The image media type each rendered image is encoded as.
    media_type: str
    #: True when the images go in a ``multipart/related`` body.
    multipart: bool


def negotiate_rendered(accept: str | None, several: bool) -> RenderedChoice:
    """The media type of rendered images and thumbnails (PS3.18 §8.7.4, Table 8.7.4-1):
    JPEG by default, PNG or GIF on request. A resource of ``several`` images (a multi-frame
    instance, a frame list) is sent as ``multipart/related``; a single image as the bare
    image unless only ``multipart/related`` is acceptable."""
    single = [MediaType("image", t.removeprefix("image/")) for t in _IMAGE_TYPES]
    multi = [multipart_related(t) for t in _IMAGE_TYPES]
    chosen = negotiate(parse_accept(accept), multi + single if several else single + multi)
    if chosen.offer.type == "multipart":
        return RenderedChoice(chosen.offer.params["type"], True)
    return RenderedChoice(chosen.offer.essence, several)
