"""The console's regional look-up: for a reader with the regional role, one patient's
studies at every member hospital, each with the hospital that holds it, and a link to
its study page that keeps naming the patient (so the page may cross hospitals too)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.errors import FilmlessError
from app.http.console import StaffSearching
from app.http.deps import ArchiveDep
from app.routers.console import console_page
from app.routers.console_studies import _value
from app.routers.pages import person_name, study_date
from app.security.principal import Role
from app.services.regional import PATIENT_KEYS, look_up

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/regional")
async def regional(request: Request, archive: ArchiveDep, staff: StaffSearching) -> Response:
    asked = {k: request.query_params.get(k, "").strip() for k in PATIENT_KEYS}
    params = [(k, v) for k, v in asked.items() if v]
    rows: list[dict[str, str]] = []
    error, status = None, 200
    if params or Role.REGIONAL not in staff.principal.roles:
        try:
            result = await look_up(archive, staff.trail, params)
        except FilmlessError as exc:
            error, status = str(exc), exc.status
        else:
            patient = urlencode(params)
            for match, owner in zip(result.matches, result.owners, strict=True):
                rows.append({
                    "uid": _value(match, "0020000D"), "patient": person_name(_value(match, "00100010")),
                    "patient_id": _value(match, "00100020"), "date": study_date(_value(match, "00080020")),
                    "description": _value(match, "00081030"), "modalities": _value(match, "00080061"),
                    "hospital": _value(match, "00091011") or owner[2], "query": patient,
                })  # fmt: skip
    return console_page(
        "console_regional.html", request, status, signed=staff.signed, keys=PATIENT_KEYS, asked=asked,
        rows=rows, error=error, searched=bool(params) and error is None,
    )  # fmt: skip
