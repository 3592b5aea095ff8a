"""Email: to the hospital's SMTP server (``FILMLESS_SMTP_*``), or, with none configured
(the embedded default), to ``DATA_DIR/outbox/`` as one .eml file per message.

A message may carry a share's link and access code in its body; neither they, the
recipient's address nor the subject ever reach a log line — only that a message was
sent, and where to (the server, or the outbox file).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from app.errors import BadRequest, StorageUnavailable
from app.settings import Settings

log = logging.getLogger(__name__)


class MailUnavailable(StorageUnavailable):
    """The SMTP server refused the message or could not be reached (503)."""


@dataclass(frozen=True)
class Letter:
    to: str
    subject: str
    text: str


def valid_address(address: str) -> str:
    """An addr-spec (RFC 5322 §3.4.1) alone: no display name, no header injection."""
    address = address.strip()
    _, parsed = email.utils.parseaddr(address)
    local, _, domain = parsed.rpartition("@")
    if (
        not parsed
        or parsed != address
        or len(address) > 254
        or not local
        or "." not in domain
        or any(c.isspace() or c in "\r\n<>,;" for c in address)
    ):
        raise BadRequest("that is not an email address")
    return address


def compose(settings: Settings, letter: Letter) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = valid_address(letter.to)
    message["Subject"] = letter.subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    domain = email.utils.parseaddr(settings.smtp_from)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    message.set_content(letter.text)
    return message


async def send(settings: Settings, letter: Letter) -> str:
    """Send ``letter``; return where it went ("smtp://host:port" or the outbox file)."""
    message = compose(settings, letter)
    if settings.smtp_host is None:
        path = await asyncio.to_thread(_to_outbox, settings.outbox_path, message)
        log.info("email written to the outbox: %s", path)
        return str(path)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    where = f"smtp://{settings.smtp_host}:{settings.smtp_port}"
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            use_tls=settings.smtp_security == "ssl",
            start_tls=True if settings.smtp_security == "starttls" else False,
            cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            username=settings.smtp_user,
            password=password,
            timeout=settings.smtp_timeout,
        )
    except (aiosmtplib.SMTPException, OSError) as exc:
        # The exception's text may quote the server's reply to our recipient: type only.
        log.warning("email to %s failed: %s", where, type(exc).__name__)
        raise MailUnavailable("the mail server could not take the message", type(exc).__name__) from exc
    log.info("email sent through %s", where)
    return where


def _to_outbox(outbox: Path, message: EmailMessage) -> Path:
    """Written under a temporary name and renamed, so a reader of the outbox never sees
    half a message."""
    outbox.mkdir(parents=True, exist_ok=True)
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(6)}"
    final = outbox / f"{name}.eml"
    partial = outbox / f".{name}.partial"
    with open(partial, "wb") as out:
        out.write(message.as_bytes())
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, final)
    return final
