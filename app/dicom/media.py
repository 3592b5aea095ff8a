"""Media types, the Accept header and content negotiation (PS3.18 §8.7).

DICOMweb resources are offered in a few representations: metadata as
``application/dicom+json`` (or plain ``application/json``), instances as
``multipart/related; type="application/dicom"``, bulk data and frames as
``multipart/related; type="application/octet-stream"``. A client states what it accepts
with media ranges carrying q-values and, for DICOM payloads, a ``transfer-syntax``
parameter (PS3.18 §8.7.3.7). :func:`negotiate` picks the representation; which transfer
syntax the archive can actually deliver is left to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from app.errors import BadRequest, NotAcceptable

__all__ = [
    "DEFAULT_TRANSFER_SYNTAX",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "MediaRange",
    "MediaType",
    "MediaTypes",
    "Negotiated",
    "multipart_related",
    "negotiate",
    "parse_accept",
    "parse_content_type",
]


class MediaTypes(StrEnum):
    """The media types the archive reads and writes (PS3.18 §8.7.3)."""

    DICOM = "application/dicom"
    DICOM_JSON = "application/dicom+json"
    JSON = "application/json"
    OCTET_STREAM = "application/octet-stream"
    MULTIPART_RELATED = "multipart/related"


#: Explicit VR Little Endian, PS3.5 §A.2.
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

#: Transfer syntax of ``multipart/related; type="application/dicom"`` when the media range
#: names none (PS3.18 §8.7.3, Table 8.7.3-2): Explicit VR Little Endian. Whether the archive can produce
#: it for a given instance is the caller's decision.
DEFAULT_TRANSFER_SYNTAX = EXPLICIT_VR_LITTLE_ENDIAN

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# An unquoted parameter value. RFC 9110 wants a token, but clients commonly send
# ``type=application/dicom`` unquoted, so anything short of a delimiter is taken.
_BARE_VALUE = re.compile(r'[^\s";,\\]+')
# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


@dataclass(frozen=True)
class MediaType:
    """A concrete media type: lower-cased ``type``/``subtype``, parameters by lower-cased
    name with unquoted values (case preserved: a boundary is case-sensitive)."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def essence(self) -> str:
        """``type/subtype`` without parameters."""
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return self.essence + _format_params(self.params)


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header (RFC 9110 §12.5.1). ``type`` and ``subtype`` may
    be ``*``; ``params`` excludes ``q``; ``position`` is its index in the header."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0
    position: int = 0

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        q = "" if self.q == 1.0 else f"; q={self.q:g}"
        return self.essence + _format_params(self.params) + q


@dataclass(frozen=True)
class Negotiated:
    """The outcome of :func:`negotiate`.

    ``offer`` is the representation to send; ``range`` the Accept media range that
    selected it; ``alternatives`` every acceptable (q > 0) range matching ``offer``, most
    specific first, then by q, then header order (``range`` is the first), so a caller
    that cannot honour the preferred ``transfer-syntax`` can fall back to the next."""

    offer: MediaType
    range: MediaRange
    alternatives: tuple[MediaRange, ...]

    @property
    def params(self) -> Mapping[str, str]:
        """Parameters of the selecting range (without ``q``)."""
        return self.range.params

    @property
    def transfer_syntax(self) -> str | None:
        """The selecting range's ``transfer-syntax`` (``*`` = any); None if absent."""
        return self.range.params.get("transfer-syntax")

    def transfer_syntaxes(self, default: str) -> list[str]:
        """Acceptable transfer syntaxes in preference order, ``default`` standing in for
        ranges that name none (PS3.18 §8.7.3.7, §8.7.8.2); may contain ``*``."""
        found = (r.params.get("transfer-syntax", default) for r in self.alternatives)
        return list(dict.fromkeys(found))


def multipart_related(type_: str) -> MediaType:
    """``multipart/related; type="<type_>"``, the usual shape of a DICOMweb offer."""
    return MediaType("multipart", "related", {"type": type_})


def parse_content_type(value: str, header: str = "Content-Type") -> MediaType:
    """Parse a Content-Type value (RFC 9110 §8.3); wildcards are not allowed.

    Raises BadRequest naming ``header`` when the value is malformed."""
    items = list(_split_unquoted(value, ","))
    if len(items) != 1:
        raise BadRequest(f"malformed {header} header: expected exactly one media type")
    type_, subtype, params = _parse_media(items[0], header)
    if "*" in (type_, subtype):
        raise BadRequest(f"malformed {header} header: a wildcard is not a media type")
    return MediaType(type_, subtype, params)


def parse_accept(value: str | None) -> list[MediaRange]:
    """Parse an Accept header into media ranges, in header order.

    A missing or blank header means ``*/*`` (RFC 9110 §12.5.1). Commas inside quoted
    parameter values do not split ranges. ``q`` must be a valid qvalue (0 to 1, at most
    three decimals); ``q=0`` is kept and means "not acceptable". Raises BadRequest naming
    the Accept header for anything malformed."""
    if value is None or not value.strip():
        return [MediaRange("*", "*")]
    ranges: list[MediaRange] = []
    for item in _split_unquoted(value, ","):
        if not item.strip():
            continue  # RFC 9110 §5.6.1: empty list elements are ignored
        type_, subtype, params = _parse_media(item, "Accept")
        if type_ == "*" and subtype != "*":
            raise BadRequest(f"malformed Accept header: invalid media range {item.strip()!r}")
        q = _parse_q(params.pop("q", None))
        ranges.append(MediaRange(type_, subtype, params, q, len(ranges)))
    if not ranges:
        return [MediaRange("*", "*")]
    return ranges


def negotiate(ranges: Sequence[MediaRange], offers: Sequence[MediaType]) -> Negotiated:
    """Choose the offer that best satisfies the Accept ``ranges`` (PS3.18 §8.7.3, §8.7.5,
    §8.7.8).

    Matching a range against an offer:

    * ``*/*`` matches every offer, ``type/*`` every offer of that type, ``type/subtype``
      only that media type; specificity grows in that order.
    * A ``type`` parameter on the range (``multipart/related; type="application/dicom"``)
      must equal the offer's ``type`` (case-insensitively) and adds specificity.
    * An exact ``multipart/...`` range without ``type`` asks for the resource's default
      representation (PS3.18 §8.7.3): it matches only the first offer of that media type.
    * Other parameters (``transfer-syntax``, ``charset``) do not affect matching; they are
      handed back for the caller to honour.

    An offer's quality is that of its most specific matching ranges (RFC 9110 §12.5.1), so
    ``*/*, application/json;q=0`` excludes JSON; quality 0 means not acceptable. The best
    offer has the highest quality, then the most specific range, then the range earliest
    in the header, then the earliest offer. Raises NotAcceptable if no offer is acceptable.
    """
    best: tuple[tuple[float, int, int, int], Negotiated] | None = None
    for index, offer in enumerate(offers):
        default = _is_default(offer, offers[:index])
        matches = [(spec, r) for r in ranges if (spec := _specificity(r, offer, default)) is not None]
        if not matches:
            continue
        top = max(spec for spec, _ in matches)
        q = max(r.q for spec, r in matches if spec == top)
        if q <= 0:
            continue
        acceptable = sorted((m for m in matches if m[1].q > 0), key=lambda m: (-m[0], -m[1].q, m[1].position))
        chosen = acceptable[0][1]
        key = (-q, -top, chosen.position, index)
        if best is None or key < best[0]:
            best = (key, Negotiated(offer, chosen, tuple(r for _, r in acceptable)))
    if best is None:
        wanted = ", ".join(str(r) for r in ranges)
        available = ", ".join(str(o) for o in offers) or "nothing"
        raise NotAcceptable(
            f"none of the acceptable media types ({wanted}) is available; offered: {available}"
        )
    return best[1]


def _specificity(r: MediaRange, offer: MediaType, default: bool) -> int | None:
    """How specifically ``r`` matches ``offer`` (0 to 3), None if it does not."""
    if r.type == "*":
        spec = 0
    elif r.type != offer.type:
        return None
    elif r.subtype == "*":
        spec = 1
    elif r.subtype != offer.subtype:
        return None
    else:
        spec = 2
    wanted = r.params.get("type")
    if wanted is not None:
        have = offer.params.get("type")
        if have is None or not _type_matches(wanted.lower(), have.lower()):
            return None
        # ``type="*/*"`` (sent by dicomweb-client by default) accepts any root type.
        return spec + (0 if "*" in wanted else 1)
    if spec == 2 and offer.type == "multipart" and not default:
        return None
    return spec


def _type_matches(wanted: str, have: str) -> bool:
    """A multipart ``type`` parameter, which may itself be a media range (``*/*``)."""
    if wanted in ("*", "*/*"):
        return True
    if wanted.endswith("/*"):
        return have.startswith(wanted[:-1])
    return wanted == have


def _is_default(offer: MediaType, earlier: Sequence[MediaType]) -> bool:
    return all(o.essence != offer.essence for o in earlier)


def _parse_q(raw: str | None) -> float:
    if raw is None:
        return 1.0
    if not _QVALUE.fullmatch(raw):
        raise BadRequest(f"malformed Accept header: invalid q-value {raw!r} (expected 0 to 1)")
    return float(raw)


def _parse_media(text: str, header: str) -> tuple[str, str, dict[str, str]]:
    """Split ``type/subtype *( ; name=value )`` into its lower-cased parts."""
    pieces = list(_split_unquoted(text, ";"))
    essence = pieces[0].strip()
    type_, slash, subtype = essence.partition("/")
    if not slash or not _TOKEN.fullmatch(type_) or not _TOKEN.fullmatch(subtype):
        raise BadRequest(f"malformed {header} header: invalid media type {essence!r}")
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        if not piece.strip():
            continue  # tolerate "a/b;" and "a/b;;c=d"
        name, eq, raw = piece.partition("=")
        name = name.strip().lower()
        if not eq or not _TOKEN.fullmatch(name):
            raise BadRequest(f"malformed {header} header: invalid parameter {piece.strip()!r}")
        params.setdefault(name, _parse_value(raw.strip(), header))
    return type_.lower(), subtype.lower(), params


def _parse_value(raw: str, header: str) -> str:
    """A token, or a quoted-string with its backslash escapes resolved (RFC 9110 §5.6.4)."""
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"') or _escaped_end(raw):
            raise BadRequest(f"malformed {header} header: unterminated quoted string {raw!r}")
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    if not _BARE_VALUE.fullmatch(raw):
        raise BadRequest(f"malformed {header} header: invalid parameter value {raw!r}")
    return raw


def _escaped_end(raw: str) -> bool:
    """True if the closing quote of ``raw`` is itself backslash-escaped."""
    backslashes = len(raw[1:-1]) - len(raw[1:-1].rstrip("\\"))
    return backslashes % 2 == 1


def _split_unquoted(text: str, sep: str) -> Iterator[str]:
    """Split on ``sep`` outside quoted strings (a quoted value may contain it)."""
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def _format_params(params: Mapping[str, str]) -> str:
    return "".join(f"; {name}={_quote(value)}" for name, value in params.items())


def _quote(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
