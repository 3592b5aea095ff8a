"""The audit trail of an HTTP request, started from the request's facts before
authentication (so refused attempts are recorded too) and kept on the request for the
error handler, which records the requests that fail."""

from __future__ import annotations

from fastapi import Request

from app.services.audit import Trail, Transaction, redact


def start(request: Request, transaction: Transaction) -> Trail:
    """The request's trail: its method, path (without a share secret), query, client
    address and user agent, as plain values the services fill in and record."""
    trail = Trail(
        transaction,
        method=request.method,
        path=redact(request.url.path),
        query=request.url.query or None,
        client_address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    request.state.audit = trail
    return trail
