"""``/metrics`` for the operator's Prometheus (the text exposition format)."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import APIRouter, Request, Response

from app.errors import NotFound
from app.http.deps import ArchiveDep
from app.observability import metrics

router = APIRouter(tags=["health"])

_LOOPBACK = ("127.", "::1")


@router.get("/metrics", summary="Metrics for Prometheus", include_in_schema=False)
async def scrape(request: Request, archive: ArchiveDep) -> Response:
    """With ``FILMLESS_METRICS_TOKEN`` set, only a scrape bearing it; else only a client on
    this machine that came straight here (not through a proxy). Anyone else sees nothing
    there (404): metrics hold no patient data, but they tell how the archive is used."""
    expected = archive.settings.metrics_token
    if expected is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        wanted = expected.get_secret_value().encode()
        if not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(wanted).digest()):
            raise NotFound("not found")
    else:
        client = request.client.host if request.client else ""
        proxied = "x-forwarded-for" in request.headers or "forwarded" in request.headers
        if proxied or not client.startswith(_LOOPBACK):
            raise NotFound("not found")
    pool = archive.pool
    metrics.POOL_CONNECTIONS.labels("idle").set(pool.get_idle_size())
    metrics.POOL_CONNECTIONS.labels("in_use").set(pool.get_size() - pool.get_idle_size())
    return Response(metrics.exposition(), media_type=metrics.MEDIA_TYPE)
