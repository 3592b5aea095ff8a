"""What decoding, rendering and converting the frames of one stored instance take from its
metadata: the Image Pixel Module (PS3.3 C.7.6.3) as a :class:`PixelDescription`, and what
makes a frame's presentation values (PS3.4 Annex N.2) as a :class:`Presentation`.

Both derive from the instance's DICOM JSON and the LUT values it holds as bulk data, which
never change under an object key: a :class:`PixelSource` is built once per stored object
and kept (see :mod:`app.services.pixel_sources`), instead of parsing the JSON and
rebuilding a pydicom Dataset for every frame served.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.dicom.pixels import PixelDescription, Presentation, UnsupportedPixelData

__all__ = ["PixelSource"]

#: The top-level elements :meth:`Presentation.from_json` reads (PS3.3 C.7.6.3, C.11.1,
#: C.11.2, C.7.6.16), the transfer syntax it may carry, and Per-Frame Functional Groups.
_KEPT = (
    "00020010", "00280004", "00280103", "00281050", "00281051", "00281052", "00281053",
    "00281056", "00281101", "00281102", "00281103", "00281201", "00281202", "00281203",
    "00281221", "00281222", "00281223", "00283000", "00283010", "52009229", "52009230",
)  # fmt: skip
#: What an entry costs besides its LUT values and per-frame groups (a rough estimate: the
#: description, a Presentation and the dictionaries holding them).
_BASE_SIZE = 4 << 10
#: Bytes of Python objects per byte of DICOM JSON text they are parsed from (estimated).
_PARSED_FACTOR = 8


@dataclass(eq=False)
class PixelSource:
    """The pixel attributes of one stored instance.

    ``description`` is None when the instance has no Pixel Data; ``problem`` says why the
    archive cannot decode it (a 406) when its Image Pixel attributes are unusable: kept as
    text, so that each refusal raises an exception of its own."""

    transfer_syntax_uid: str
    description: PixelDescription | None
    problem: str | None
    #: The metadata's top-level elements a Presentation is made from.
    presentation_json: dict[str, Any]
    #: LUT values held as bulk data, by BulkDataURI (see Presentation.bulk_data_uris).
    luts: dict[str, bytes]
    #: Bytes this entry holds, estimated, for bounding a cache of them.
    size: int
    _presentation: Presentation | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_json(
        cls,
        metadata: Mapping[str, Any],
        transfer_syntax_uid: str,
        luts: Mapping[str, bytes],
        has_pixels: bool,
        text_length: int = 0,
    ) -> PixelSource:
        """From an instance's DICOM JSON (PS3.18 Annex F) and the LUT values of its
        :meth:`Presentation.bulk_data_uris`; ``has_pixels`` when the index found Pixel
        Data in the stored object. ``text_length`` is the JSON text's length, for the size
        estimate of per-frame functional groups."""
        description, problem = None, None
        if has_pixels or "7FE00010" in metadata:
            try:
                description = PixelDescription.from_json(metadata, transfer_syntax_uid)
            except UnsupportedPixelData as exc:
                problem = exc.message
        kept = {tag: metadata[tag] for tag in _KEPT if tag in metadata}
        size = _BASE_SIZE + sum(len(v) for v in luts.values())
        if "52009230" in kept:
            size += text_length * _PARSED_FACTOR
        return cls(transfer_syntax_uid, description, problem, kept, dict(luts), size)

    def pixel_description(self) -> PixelDescription:
        """The description; UnsupportedPixelData when there is none to decode with."""
        if self.description is None:
            raise UnsupportedPixelData(self.problem or "the instance has no pixel data")
        return self.description

    @property
    def per_frame(self) -> bool:
        """Whether frames have presentations of their own (enhanced multi-frame images)."""
        return "52009230" in self.presentation_json

    def presentation(self, index: int) -> Presentation:
        """The presentation of the frame of 0-based ``index``: made once when every frame
        shares it, per call otherwise. Blocking (it builds a pydicom Dataset)."""
        if self.per_frame:
            return self._made(index)
        with self._lock:
            if self._presentation is None:
                self._presentation = self._made(0)
            return self._presentation

    def _made(self, index: int) -> Presentation:
        return Presentation.from_json(
            self.presentation_json, index, bulk=self.luts, transfer_syntax_uid=self.transfer_syntax_uid
        )
