"""The DICOMweb root of a de-identifying share (PS3.15 Annex E), at the share gateway.

Its recipient sees replacement UIDs only (app.dicom.deidentification.remap_uid), so:

- UIDs in the path and in the query (``StudyInstanceUID=…``, WADO-URI's ``studyUID=…``)
  are translated back to the originals; a UID that is not a replacement of one of the
  share's (an original UID included) becomes one that matches nothing, so the originals
  cannot be used to reach around the de-identification.
- A query on an attribute the profile does not keep (PatientName, PatientID,
  PatientBirthDate, AccessionNumber, dates, …) is answered as the de-identified copies
  would answer it: with no match, whatever its value — the copies hold none of those
  values, and matching on the originals would disclose them.
- Bulk data other than the pixel data is not served (its attribute may be one the
  profile removes: an encapsulated document, a private value).
- JSON answers (QIDO-RS, metadata, errors) are de-identified as a whole before they
  start: DICOM JSON data sets by the profile, and every original UID left in a URL or a
  message replaced. The instances themselves are rewritten where they are streamed
  (app.services.deidentified), with the key the share's principal carries.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pydicom.datadict import tag_for_keyword
from starlette.types import Message, Scope, Send

from app.dicom.deidentification import Pseudonyms, deidentify_json, keeps
from app.dicom.header import PIXEL_DATA_PATH
from app.http.state import running_scope

#: Stands for a UID that is no replacement of the share's: it matches nothing.
NO_MATCH = "0.0"
_UID_KEYS = {0x0020000D, 0x0020000E, 0x00080018}
_WADO_URI_UIDS = {"studyUID", "seriesUID", "objectUID"}
_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "requestType", "contentType",
               "transferSyntax", "frameNumber", "charset", "anonymize", "annotation", "rows",
               "columns", "region", "windowCenter", "windowWidth", "imageQuality",
               "presentationUID", "presentationSeriesUID"}  # fmt: skip
_JSON_TYPES = (b"application/json", b"application/dicom+json")


#: On every answer of a de-identified share some of whose instances may show identity in
#: their pixels (Burned In Annotation YES or absent): PS3.15 §E.1.1 leaves pixel data alone.
BURNED_IN_HEADER = (b"filmless-burned-in-annotation", b"possible")


async def route(scope: Scope, send: Send, secret: str) -> tuple[Scope, Send] | None:
    """The request and ``send`` as a de-identifying share's answer needs them (unchanged
    for any other share, or an invalid secret, which authentication then refuses); None
    when it has been answered here (no match)."""
    shares = running_scope(scope).shares
    access = await shares.recall(secret)
    key = None if access is None else shares.deidentify_key(access.share)
    if access is None or key is None:
        return scope, send
    burned_in = await shares.burned_in_warning(access.share)
    pseudonyms: Pseudonyms | None = await shares.pseudonyms(access.share)
    assert pseudonyms is not None  # the share de-identifies
    translated, missed = translate(scope, pseudonyms)
    if missed:  # perhaps an instance stored since the replacements were read
        pseudonyms = await shares.pseudonyms(access.share, fresh=True)
        assert pseudonyms is not None
        translated, missed = translate(scope, pseudonyms)
    send = rewriting(send, pseudonyms, burned_in)
    if translated is None:
        await no_match(send)
        return None
    return translated, send


def translate(scope: Scope, pseudonyms: Pseudonyms) -> tuple[Scope | None, bool]:
    """The request in original UIDs (None when it is answered by no match at all), and
    whether it named a UID that is no replacement of the share's."""
    missed = False

    def original(uid: str) -> str:
        nonlocal missed
        found = pseudonyms.originals.get(uid)
        missed = missed or found is None
        return found or NO_MATCH

    path: str = scope["path"]
    segments = path.split("/")
    for n in range(1, len(segments)):
        if segments[n - 1] in ("studies", "series", "instances"):
            segments[n] = original(segments[n])
        if segments[n - 1] == "bulkdata" and "/".join(segments[n:]).upper() != PIXEL_DATA_PATH:
            segments[n:] = ["00000000"]  # a value never stored as bulk: 404
            break
    path = "/".join(segments)
    query = []
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        if name in _WADO_URI_UIDS and path.endswith("/wado"):
            value = original(value)
        elif name not in _PARAMETERS:
            tags = [_tag(part) for part in name.split(".")]
            if tags and tags[-1] in _UID_KEYS and all(t is not None for t in tags):
                value = ",".join(original(v) for v in value.replace("\\", ",").split(","))
            elif any(t is not None and not keeps(t) for t in tags):
                return None, missed
        query.append((name, value))
    # Plain JSON, to be rewritten (no gzip from the application).
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
    translated = {
        **scope, "path": path, "raw_path": path.encode(), "query_string": urlencode(query).encode(),
        "headers": headers,
    }  # fmt: skip
    return translated, missed


def _tag(name: str) -> int | None:
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return int(name, 16)
    return tag_for_keyword(name)


def rewriting(send: Send, pseudonyms: Pseudonyms, burned_in: bool) -> Send:
    """``send``, de-identifying JSON bodies (held whole until rewritten) and headers."""
    held: list[Message] = []
    body = bytearray()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            hide = pseudonyms.hide
            headers = [(k, hide(v.decode("latin-1")).encode("latin-1")) for k, v in message["headers"]]
            if burned_in:
                headers.append(BURNED_IN_HEADER)
            message = {**message, "headers": headers}
            content_type = dict((k.lower(), v) for k, v in headers).get(b"content-type", b"")
            if content_type.startswith(_JSON_TYPES):
                held.append(message)
                return
        elif message["type"] == "http.response.body" and held:
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            out = rewrite_json(bytes(body), pseudonyms) if body else b""
            start = held.pop()
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(out)).encode()))
            await send({**start, "headers": headers})
            message = {"type": "http.response.body", "body": out}
        await send(message)

    return wrapped


def rewrite_json(body: bytes, pseudonyms: Pseudonyms) -> bytes:
    """A JSON answer de-identified: DICOM JSON data sets by the profile, then any
    original UID left (in a URL, a message) replaced."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return pseudonyms.hide(body.decode("utf-8", "replace")).encode()
    if isinstance(data, list) and all(isinstance(d, dict) for d in data):
        data = [deidentify_json(d, pseudonyms.key) for d in data]
    return pseudonyms.hide(json.dumps(data, separators=(",", ":"))).encode()


async def no_match(send: Send) -> None:
    """A search whose keys the de-identified copies hold no value for: no match (PS3.18
    §10.6.3: 200 with an empty array)."""
    body = b"[]"
    headers = [(b"content-type", b"application/dicom+json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
