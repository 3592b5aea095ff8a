"""What the OpenAPI document says beyond what FastAPI infers from the handlers: DICOM JSON
as a schema, media types of request and response bodies, one error body, and the
share-scoped DICOMweb root — so that generated clients get a typed method per route.

The routers declare their bodies with the constants here (``responses=``,
``openapi_extra=``); :func:`install` finishes the document once for the whole app.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, RootModel

from app.dicom.negotiation import DICOM_JSON

#: ``multipart/related`` bodies of whole instances and of bulk values (PS3.18 §8.6.1.2).
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
MULTIPART_OCTETS = 'multipart/related; type="application/octet-stream"'
_BINARY: dict[str, object] = {"type": "string", "format": "binary"}


class DicomAttribute(BaseModel):
    """One attribute of a DICOM JSON object (PS3.18 §F.2.2): its VR and at most one of
    ``Value``, ``BulkDataURI`` or ``InlineBinary``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"example": {"vr": "UI", "Value": ["1.2.840.113619.2.55.3.604688119"]}},
    )

    vr: str = Field(pattern=r"^[A-Z]{2}$", description="Value Representation (PS3.5 §6.2)")
    # The names are the standard's (PS3.18 §F.2.3), capitalised as it writes them.
    Value: list[Any] | None = Field(
        default=None,
        description="Strings, numbers, person names ({Alphabetic: …}) or, for SQ, nested objects",
    )
    BulkDataURI: str | None = Field(
        default=None, description="Where to retrieve a bulk value (PS3.18 §F.2.6)"
    )
    InlineBinary: str | None = Field(default=None, description="A binary value, base64 (PS3.18 §F.2.7)")


class DicomObject(RootModel[dict[str, DicomAttribute]]):
    """A DICOM JSON object (PS3.18 §F.2): attributes by their tag, eight hex digits."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "0020000D": {"vr": "UI", "Value": ["1.2.840.113619.2.55.3.604688119"]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
                "00080061": {"vr": "CS", "Value": ["CT"]},
            }
        }
    )


class ErrorBody(BaseModel):
    """Every refusal's body (PS3.18 §8.6.1 leaves it open): the status and a reason."""

    model_config = ConfigDict(json_schema_extra={"example": {"status": 404, "message": "no such study"}})

    status: int
    message: str


def dicom_json(description: str) -> dict[str, object]:
    """A 200 response of DICOM JSON objects (QIDO-RS results, WADO-RS metadata, the STOW-RS
    response's single object is :data:`STOW_RESULT`)."""
    objects = {"type": "array", "items": {"$ref": "#/components/schemas/DicomObject"}}
    return {
        "model": list[DicomObject],
        "description": description,
        "content": {DICOM_JSON: {"schema": objects}},
    }


def binary(description: str, *media_types: str) -> dict[str, object]:
    """A response whose body is bytes of the given media types."""
    return {"description": description, "content": {m: {"schema": _BINARY} for m in media_types}}


def error(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


#: The STOW-RS response: one DICOM JSON object with ReferencedSOPSequence and
#: FailedSOPSequence (PS3.18 §10.5.3).
STOW_RESULT: dict[str, object] = {
    "model": DicomObject,
    "content": {DICOM_JSON: {"schema": {"$ref": "#/components/schemas/DicomObject"}}},
}

#: STOW-RS request bodies: several instances as ``multipart/related`` with
#: ``type="application/dicom"``, or one as ``application/dicom`` (PS3.18 §10.5.1.2). The
#: multipart key is the bare media range: a generated method cannot make up the boundary a
#: multipart body needs, and a generator that cannot send ``multipart/related`` then leaves
#: only that form out, keeping the single instance, which needs none.
STOW_BODY: dict[str, object] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/related": {
                "schema": {
                    **_BINARY,
                    "description": 'Content-Type: multipart/related; type="application/dicom"; boundary=…',
                },
            },
            "application/dicom": {"schema": {**_BINARY, "description": "One Part 10 instance"}},
        },
    }
}


def operation_id(route: APIRoute) -> str:
    """The handler's name (unique across the routers, which a test checks): generated
    clients name their methods after it."""
    return route.name


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` produce the finished document (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _refusals_as_error_body(document)
            _add_share_root(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def _refusals_as_error_body(document: dict[str, Any]) -> None:
    """Malformed requests are answered 400 (as DICOMweb does), not FastAPI's 422, and every
    refusal carries :class:`ErrorBody`; a route that takes a token may answer 401 and 403."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for item in document["paths"].values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                del responses["422"]
                responses.setdefault(
                    "400", {"description": "An invalid parameter or body, named in the message"}
                )
            if operation.get("security"):
                responses.setdefault("401", {"description": "No token, or one that is invalid or expired"})
                responses.setdefault("403", {"description": "The token lacks the role or right needed"})
            for status, response in responses.items():
                # A 409 of STOW-RS is DICOM JSON (its FailedSOPSequence), declared as such.
                if status[0] in "45" and "content" not in response:
                    response["content"] = copy.deepcopy(_ERROR_CONTENT)


#: Reads under the share gateway's root (see :mod:`app.share_gateway`).
_SHARED = ("/dicom-web/", "/wado")
_SECRET = {
    "name": "secret",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 100},
    "description": "The share link's token: it authorizes the request, no bearer token is needed",
}


def _add_share_root(document: dict[str, Any]) -> None:
    """``/share/{secret}/dicom-web/…`` and ``/share/{secret}/wado`` are the DICOMweb root of
    one share: the same reads, restricted to the shared studies, authorized by the path."""
    paths = document["paths"]
    for path, item in list(paths.items()):
        if not path.startswith(_SHARED) or "get" not in item:
            continue
        operation = copy.deepcopy(item["get"])
        operation["operationId"] = operation["operationId"] + "_shared"
        operation["tags"] = ["Share root"]
        operation["summary"] = operation["summary"] + " (share root)"
        operation["parameters"] = [_SECRET, *operation.get("parameters", [])]
        operation.pop("security", None)
        operation["security"] = []
        operation["responses"].pop("403", None)
        operation["responses"].setdefault("404", copy.deepcopy(_not_found()))
        paths["/share/{secret}" + path] = {"get": operation}


def _not_found() -> dict[str, Any]:
    return {"description": "No such share, or not in it", "content": _ERROR_CONTENT}


def _query(name: str, description: str, schema: dict[str, object] | None = None) -> dict[str, object]:
    return {"name": name, "in": "query", "required": False, "schema": schema or {"type": "string"},
            "description": description}  # fmt: skip


#: QIDO-RS query parameters (PS3.18 §8.3.4): the common matching keys by keyword, and the
#: result controls. Any other attribute matches by keyword or tag too (the QIDO column
#: whitelist decides which); a generated client passes those as extra query parameters.
QIDO_QUERY: dict[str, object] = {
    "parameters": [
        _query("PatientID", "Patient ID (exact, or * and ? wildcards)"),
        _query("PatientName", "Patient's Name (wildcards; fuzzymatching=true matches name parts)"),
        _query("StudyInstanceUID", "Study Instance UID, or a comma-separated list"),
        _query("SeriesInstanceUID", "Series Instance UID, or a comma-separated list"),
        _query("SOPInstanceUID", "SOP Instance UID, or a comma-separated list"),
        _query("StudyDate", "A date (YYYYMMDD) or a range (YYYYMMDD-YYYYMMDD)"),
        _query("AccessionNumber", "Accession Number"),
        _query("ModalitiesInStudy", "A modality the study has, e.g. CT"),
        _query("Modality", "The series' modality, e.g. CT"),
        _query("includefield", "Attributes to return beyond the defaults, or 'all'"),
        _query("fuzzymatching", "Match person names by their parts", {"type": "boolean"}),
        _query("limit", "At most this many results", {"type": "integer", "minimum": 1}),
        _query("offset", "Skip this many results", {"type": "integer", "minimum": 0}),
    ]
}


def _required(name: str, description: str) -> dict[str, object]:
    return {**_query(name, description), "required": True}


#: WADO-URI query parameters (PS3.18 §9.1.2): the handler reads them itself, so that each
#: refusal names the parameter and the section.
WADO_URI_QUERY: dict[str, object] = {
    "parameters": [
        {**_required("requestType", "Always WADO"), "schema": {"type": "string", "enum": ["WADO"]}},
        _required("studyUID", "Study Instance UID"),
        _required("seriesUID", "Series Instance UID"),
        _required("objectUID", "SOP Instance UID"),
        _query("contentType", "application/dicom, image/jpeg, image/png or image/gif (default image/jpeg)"),
        _query("transferSyntax", "For application/dicom: a transfer syntax UID, or * for as stored"),
        _query("frameNumber", "For an image: the frame to render", {"type": "integer", "minimum": 1}),
        _query("windowCenter", "For an image: the window's center", {"type": "number"}),
        _query("windowWidth", "For an image: the window's width", {"type": "number"}),
        _query("rows", "For an image: its height in pixels", {"type": "integer", "minimum": 1}),
        _query("columns", "For an image: its width in pixels", {"type": "integer", "minimum": 1}),
    ]
}
