"""The checked-in OpenAPI document is the one the application generates, and it describes
every operation well enough for client generators: media types, DICOM JSON, errors, the
share root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.cli.main import render_openapi

CHECKED_IN = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_checked_in_openapi_is_current():
    assert CHECKED_IN.read_text(encoding="utf-8") == render_openapi(), (
        "openapi/openapi.json is stale: run `make openapi`"
    )


def test_openapi_documents_the_dicomweb_transactions():
    paths = json.loads(render_openapi())["paths"]
    assert "post" in paths["/dicom-web/studies"]
    assert "get" in paths["/dicom-web/studies"]
    assert "get" in paths["/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata"]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in document["paths"].items() for m, op in item.items()]


def test_every_operation_has_a_unique_id_and_typed_refusals():
    document = json.loads(render_openapi())
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids))
    for method, path, op in _operations(document):
        assert "422" not in op["responses"], (method, path)  # the app answers 400
        for status, response in op["responses"].items():
            if status.startswith("4") and not (path.startswith("/dicom-web/studies") and status == "409"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_bodies_have_their_media_types():
    document = json.loads(render_openapi())
    paths = document["paths"]
    binary = {"type": "string", "format": "binary"}
    for path in ("/dicom-web/studies", "/dicom-web/studies/{study}"):
        content = paths[path]["post"]["requestBody"]["content"]
        for media_type in ("application/dicom", "multipart/related"):
            assert {k: v for k, v in content[media_type]["schema"].items() if k != "description"} == binary
    instance = "/dicom-web/studies/{study}/series/{series}/instances/{instance}"
    assert (
        'multipart/related; type="application/dicom"' in paths[instance]["get"]["responses"]["200"]["content"]
    )
    frames = paths[instance + "/frames/{frame_list}"]["get"]["responses"]["200"]["content"]
    assert frames['multipart/related; type="application/octet-stream"']["schema"] == binary
    assert "image/jpeg" in paths[instance + "/rendered"]["get"]["responses"]["200"]["content"]
    assert "image/jpeg" in paths[instance + "/thumbnail"]["get"]["responses"]["200"]["content"]
    bulk = paths[instance + "/bulkdata/{path}"]["get"]["responses"]
    assert "application/octet-stream" in bulk["200"]["content"] and "206" in bulk
    wado_uri = paths["/wado"]["get"]
    assert {"application/dicom", "image/jpeg"} <= set(wado_uri["responses"]["200"]["content"])
    assert {"requestType", "studyUID", "seriesUID", "objectUID"} <= {
        p["name"] for p in wado_uri["parameters"] if p["required"]
    }


def test_dicom_json_results_are_typed():
    document = json.loads(render_openapi())
    schemas = document["components"]["schemas"]
    assert schemas["DicomObject"]["additionalProperties"] == {"$ref": "#/components/schemas/DicomAttribute"}
    assert schemas["DicomObject"]["example"]["0020000D"]["vr"] == "UI"
    assert {"vr", "Value", "BulkDataURI", "InlineBinary"} <= set(schemas["DicomAttribute"]["properties"])
    objects = {"type": "array", "items": {"$ref": "#/components/schemas/DicomObject"}}
    paths = document["paths"]
    for path in ("/dicom-web/studies", "/dicom-web/studies/{study}/metadata"):
        assert (
            paths[path]["get"]["responses"]["200"]["content"]["application/dicom+json"]["schema"] == objects
        )
    assert {"PatientID", "StudyInstanceUID", "limit", "offset", "includefield"} <= {
        p["name"] for p in paths["/dicom-web/studies"]["get"]["parameters"]
    }
    stow = paths["/dicom-web/studies"]["post"]["responses"]
    for status in ("200", "202", "409"):
        assert stow[status]["content"]["application/dicom+json"]["schema"]["$ref"].endswith("/DicomObject")
    audit = paths["/api/audit"]["get"]["responses"]["200"]["content"]
    assert audit["application/json"]["schema"]["items"] == {"$ref": "#/components/schemas/AuditEntry"}
    assert "text/csv" in audit


def test_the_share_root_and_the_security_scheme_are_documented():
    document = json.loads(render_openapi())
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    paths = document["paths"]
    reads = [p for p, item in paths.items() if p.startswith(("/dicom-web/", "/wado")) and "get" in item]
    for path in reads:
        shared = paths["/share/{secret}" + path]["get"]
        assert shared["security"] == []
        assert shared["parameters"][0]["name"] == "secret"
        assert shared["responses"]["200"] == paths[path]["get"]["responses"]["200"]
        assert paths[path]["get"]["security"] == [{"HTTPBearer": []}]
    # The gateway passes reads only.
    assert "post" not in paths["/share/{secret}/dicom-web/studies"]
