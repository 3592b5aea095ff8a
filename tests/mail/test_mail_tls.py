"""Email over TLS to a real SMTP server on loopback (aiosmtpd) with a self-signed
certificate: STARTTLS (RFC 3207) and implicit TLS (RFC 8314), the login only inside it,
the server's certificate checked against the configured authority — and refused, with
nothing sent, when it is not trusted or when the server insists on TLS and is not given it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.services import mail
from app.services.mail import Letter, MailUnavailable
from app.settings import Settings
from tests.mail.certs import self_signed
from tests.mail.smtp import PASSWORD, USER, smtp_server

SECRET = "WXYZ-WXYZ"  # noqa: S105 - an access code as a share's email carries


def _letter() -> Letter:
    return Letter(to="dr.tls@clinic.example", subject="Images", text=f"Type {SECRET} at the page.")


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_sends_over_tls_with_the_login_inside_it(
    security: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    certificate = self_signed(tmp_path)
    with smtp_server(auth=True, tls=security, context=certificate.server_context()) as box:  # type: ignore[arg-type]
        settings = Settings(
            data_dir=tmp_path, smtp_host=box.host, smtp_port=box.port, smtp_security=security,
            smtp_ca_file=certificate.cert_file, smtp_user=USER, smtp_password=PASSWORD, smtp_timeout=5,
        )  # fmt: skip
        assert await mail.send(settings, _letter()) == f"smtp://{box.host}:{box.port}"
        (sent,) = box.messages_to("dr.tls@clinic.example")
        assert SECRET in sent.get_content()
        assert box.encrypted == [True] and box.logins == [USER]
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("app."))
    assert SECRET not in lines and PASSWORD not in lines and "dr.tls" not in lines


@pytest.mark.parametrize("security", ["starttls", "ssl"])
async def test_an_untrusted_certificate_is_refused(security: str, tmp_path: Path):
    certificate = self_signed(tmp_path)
    with smtp_server(auth=True, tls=security, context=certificate.server_context()) as box:  # type: ignore[arg-type]
        # No authority configured: the system's, which never signed this certificate.
        settings = Settings(
            data_dir=tmp_path, smtp_host=box.host, smtp_port=box.port, smtp_security=security,
            smtp_user=USER, smtp_password=PASSWORD, smtp_timeout=5,
        )  # fmt: skip
        with pytest.raises(MailUnavailable) as raised:
            await mail.send(settings, _letter())
        assert raised.value.status == 503
        assert box.received == [] and box.logins == []


async def test_a_server_that_requires_starttls_is_not_sent_in_the_clear(tmp_path: Path):
    certificate = self_signed(tmp_path)
    with smtp_server(tls="starttls", context=certificate.server_context()) as box:
        settings = Settings(
            data_dir=tmp_path, smtp_host=box.host, smtp_port=box.port, smtp_security="none", smtp_timeout=5
        )
        with pytest.raises(MailUnavailable):
            await mail.send(settings, _letter())
        assert box.received == []
