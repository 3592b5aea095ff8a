"""Server-rendered pages of share links: templates (autoescaped), their strict Content
Security Policy, and the printable access page with its QR code."""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any, Protocol

import segno
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from app.services.shares import Shares

router = APIRouter(include_in_schema=False)

_env = Environment(loader=PackageLoader("app", "templates"), autoescape=select_autoescape(["html"]))

#: No script at all, styles and images from the archive only, forms posted to it only, and
#: no framing: the pages hold patient data and secrets in their URLs.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(_env.get_template(template).render(**context), status_code=status, headers=headers)


@router.get("/assets/share.css")
async def stylesheet() -> Response:
    css = files("app").joinpath("templates/share.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


def study_date(value: str | None) -> str:
    """A DA value for people: 20240115 -> 15 January 2024."""
    try:
        return dt.datetime.strptime(value or "", "%Y%m%d").strftime("%d %B %Y").lstrip("0")
    except ValueError:
        return "Date unknown"


def person_name(value: str | None) -> str:
    """A PN value for people: Doe^Jane -> Jane Doe."""
    if not value:
        return "—"
    family, _, rest = value.split("=")[0].partition("^")
    given = rest.split("^")[0]
    return f"{given} {family}".strip()


async def summaries(shares: Shares, uids: list[str]) -> list[dict[str, Any]]:
    return dated(await shares.summaries(uids))


def dated(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Study summaries with their date for people (``date``)."""
    for study in studies:
        study["date"] = study_date(study["study_date"])
    return studies


class PrintedShare(Protocol):
    """What the access page prints of a new share (the share API's answer to its creation):
    declared here so the pages do not import the API that renders them."""

    @property
    def studies(self) -> list[str]: ...

    @property
    def page_url(self) -> str: ...


async def print_page(shares: Shares, created: PrintedShare, status: int = 200, **extra: Any) -> HTMLResponse:
    """What the film library prints or faxes instead of burning a CD (``extra``: more for
    the template, e.g. the console's PDF download form)."""
    studies = await summaries(shares, created.studies)
    names = sorted({person_name(s["patient_name"]) for s in studies})
    qr = segno.make(created.page_url, error="m").svg_inline(scale=4, title="Link to the images")
    hospital = str(studies[0]["hospital_name"]) if studies else ""
    return page(
        "print.html", status, share=created, studies=studies, patient_name=", ".join(names), qr=qr,
        hospital_name=hospital, **extra,
    )  # fmt: skip
