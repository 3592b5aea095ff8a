"""Email through a real SMTP server on loopback, and to the outbox with none configured;
no secret in the log either way."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from pathlib import Path

import pytest

from app.errors import BadRequest
from app.services import mail
from app.services.mail import Letter, MailUnavailable
from app.settings import Settings
from tests.mail.smtp import PASSWORD, USER, smtp_server

SECRET = "ABCD-EFGH"  # noqa: S105 - an access code as a share's email carries


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """The archive's log lines (the test server logs its own dialogue)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("app."))


def letter(to: str = "dr.who@clinic.example") -> Letter:
    return Letter(to=to, subject="Images for you", text=f"Open https://x.example/s/tok and type {SECRET}.")


async def test_sends_through_smtp_with_login(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    with smtp_server(auth=True) as box:
        settings = Settings(
            data_dir=tmp_path, smtp_host=box.host, smtp_port=box.port, smtp_security="none",
            smtp_user=USER, smtp_password=PASSWORD, smtp_from="Archive <archive@hospital.example>",
        )  # fmt: skip
        where = await mail.send(settings, letter())
        assert where == f"smtp://{box.host}:{box.port}"
        (sent,) = box.messages_to("dr.who@clinic.example")
        assert box.logins == [USER]
        assert sent["From"] == "Archive <archive@hospital.example>" and sent["Subject"] == "Images for you"
        assert SECRET in sent.get_content()
    assert not (tmp_path / "outbox").exists()
    assert "email sent through" in ours(caplog)
    assert SECRET not in ours(caplog) and "dr.who" not in ours(caplog) and PASSWORD not in ours(caplog)


async def test_a_wrong_password_is_a_503_without_the_reply(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with smtp_server(auth=True) as box:
        settings = Settings(
            data_dir=tmp_path, smtp_host=box.host, smtp_port=box.port, smtp_security="none",
            smtp_user=USER, smtp_password="wrong-one", smtp_timeout=3,  # noqa: S106
        )  # fmt: skip
        with pytest.raises(MailUnavailable) as raised:
            await mail.send(settings, letter())
        assert raised.value.status == 503 and box.received == []
    assert "wrong-one" not in ours(caplog) and SECRET not in ours(caplog)


async def test_no_server_is_a_503(tmp_path: Path):
    with smtp_server() as box:
        port = box.port
    settings = Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")
    with pytest.raises(MailUnavailable):
        await mail.send(settings, letter())


async def test_without_a_server_messages_go_to_the_outbox(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    settings = Settings(data_dir=tmp_path)
    where = Path(await mail.send(settings, letter()))
    assert where.parent == tmp_path / "outbox" and where.suffix == ".eml"
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [where.name]  # no partial file left
    parsed = email.message_from_bytes(await asyncio.to_thread(where.read_bytes), policy=email.policy.default)
    assert parsed["To"] == "dr.who@clinic.example" and SECRET in parsed.get_content()  # type: ignore[attr-defined]
    assert str(where) in ours(caplog) and SECRET not in ours(caplog) and "dr.who" not in ours(caplog)


@pytest.mark.parametrize(
    "address",
    ["", "nobody", "a@b", "Dr <a@b.example>", "a@b.example\r\nBcc: x@y.example", "a@b.example, c@d.example"],
)
async def test_refuses_what_is_not_one_address(tmp_path: Path, address: str):
    with pytest.raises(BadRequest):
        await mail.send(Settings(data_dir=tmp_path), letter(address))
    assert not (tmp_path / "outbox").exists()
