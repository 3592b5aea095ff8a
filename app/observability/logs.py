"""The archive's log: one JSON object per line, each carrying the id of the request it
belongs to (also sent back as ``X-Request-ID``), so an operator can follow one request
through every line it caused and hand its id to whoever reports a problem.

Nothing that identifies a patient or opens a share is logged: no query strings (QIDO
carries names and IDs), no tokens, codes or share secrets (paths under ``/s/`` and
``/share/`` are redacted), no DICOM values.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import secrets
from typing import Any

#: The id of the request being served, or None outside one.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

#: An incoming X-Request-ID is kept only if it looks like an id: a proxy's, not an
#: attacker's way to write into the log.
_INCOMING_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
# LogRecord's own attributes: anything else on a record is an extra field to emit.
# uvicorn's "color_message" repeats the message with terminal colours.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def new_request_id(incoming: str | None) -> str:
    """The incoming id when it is well formed, else a fresh one.

    >>> new_request_id("lb-7f3a9c21"), len(new_request_id("bad id\\n"))
    ('lb-7f3a9c21', 16)
    """
    if incoming and _INCOMING_ID.fullmatch(incoming):
        return incoming
    return secrets.token_hex(8)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The same, for a person at a terminal: one line, the request id in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        return f"{line} [{rid}]" if rid else line
