"""The checked-in OpenAPI document is the one the application generates."""

from __future__ import annotations

import json
from pathlib import Path

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
