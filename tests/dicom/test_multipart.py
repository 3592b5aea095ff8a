"""The multipart/related writer (RFC 2046 §5.1): framing of WADO-RS responses. The
reader's tests, and a round trip through both, are in tests/services/stow/test_reader.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest

from app.dicom.multipart import stream_multipart

BOUNDARY = "b0und4ry"


# -- writer ------------------------------------------------------------------------------


async def stream(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_writer_framing() -> None:
    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        yield {"Content-Type": "application/dicom"}, stream(b"ab", b"", b"c")
        yield {"Content-Type": "application/octet-stream", "Content-Length": "0"}, stream()

    body = await collect(stream_multipart(parts(), "XyZ"))
    assert body == (
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nabc"
        b"\r\n--XyZ\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\n\r\n"
        b"\r\n--XyZ--\r\n"
    )


@pytest.mark.parametrize("headers", [{"X": "a\r\nInjected: 1"}, {"Bad Name": "v"}])
async def test_writer_rejects_header_injection(headers: dict[str, str]) -> None:
    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        yield headers, stream(b"x")

    with pytest.raises(ValueError, match="header"):
        await collect(stream_multipart(parts(), "b"))
