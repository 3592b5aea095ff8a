"""A real SMTP server (aiosmtpd) on loopback that keeps what it is sent, for reading."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, Session

USER, PASSWORD = "filmless", "mail-secret-1"


@dataclass
class Mailbox:
    host: str
    port: int
    received: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    #: For each message received, whether its session was encrypted (TLS).
    encrypted: list[bool] = field(default_factory=list)

    def messages_to(self, address: str) -> list[EmailMessage]:
        return [m for env, m in self.received if address in env.rcpt_tos]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.box.received.append((envelope, parsed))
        # After STARTTLS aiosmtpd notes it on the session; with TLS from the start only
        # the transport knows.
        implicit = server.transport.get_extra_info("ssl_object") is not None
        self.box.encrypted.append(session.ssl is not None or implicit)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def smtp_server(
    auth: bool = False, tls: Literal["starttls", "ssl"] | None = None, context: ssl.SSLContext | None = None
) -> Iterator[Mailbox]:
    """The server, on a free loopback port. With ``tls``, it offers STARTTLS (RFC 3207)
    and requires it before mail or login, or speaks TLS from the start (RFC 8314), with
    ``context``'s certificate."""
    box = Mailbox("127.0.0.1", _free_port())

    def authenticator(
        server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = data.login.decode() == USER and data.password.decode() == PASSWORD
        if ok:
            box.logins.append(data.login.decode())
        return AuthResult(success=ok)

    extra: dict[str, Any] = {}
    if auth:
        # Without TLS (loopback only) AUTH goes in the clear; after STARTTLS, only inside
        # it. (With TLS from the start aiosmtpd cannot tell, and would never offer AUTH.)
        extra = {"authenticator": authenticator, "auth_require_tls": tls == "starttls"}
    if tls == "starttls":
        extra |= {"tls_context": context, "require_starttls": True}
    elif tls == "ssl":
        extra |= {"ssl_context": context, "server_hostname": box.host}
    controller = Controller(_Handler(box), hostname=box.host, port=box.port, **extra)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
