from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from app.dicom.header import ParsedInstance
from app.dicom.media import parse_content_type
from app.dicom.multipart import multipart_boundary, related_content_type, stream_multipart
from app.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from app.services.stow.reader import SpooledPart, spool_parts
from tests.samples import read_header

BOUNDARY = "b0und4ry"
CONTENT_TYPE = parse_content_type(f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
# A body whose parts hold CRLFs, a near-delimiter and an empty part.
BODIES = [b"first\r\n--b0und4r\r\n--b0und4ryX", b"", b"\r\nthird\r\n"]
LIMIT = 1 << 20


def frame(
    bodies: Iterable[bytes], boundary: str = BOUNDARY, preamble: bytes = b"", epilogue: bytes = b""
) -> bytes:
    out = [preamble]
    for index, body in enumerate(bodies):
        out.append(f"--{boundary}\r\nContent-Type: application/dicom\r\nX-Index: {index}\r\n\r\n".encode())
        out.append(body + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode() + epilogue)
    return b"".join(out)


async def chunked(data: bytes, *sizes: int) -> AsyncIterator[bytes]:
    """``data`` cut into pieces of the given sizes in turn (the last size repeating)."""
    position, turn = 0, 0
    while position < len(data):
        size = sizes[min(turn, len(sizes) - 1)]
        yield data[position : position + size]
        position, turn = position + size, turn + 1


async def split_at(data: bytes, cut: int) -> AsyncIterator[bytes]:
    yield data[:cut]
    yield data[cut:]


async def spool(chunks: AsyncIterator[bytes], spool_dir: Path, **limits: int) -> list[SpooledPart]:
    return await spool_parts(
        chunks, CONTENT_TYPE, spool_dir, limits.get("part", LIMIT), limits.get("body", LIMIT)
    )


def contents(parts: list[SpooledPart]) -> list[bytes]:
    return [part.path.read_bytes() for part in parts]


def count(spool_dir: Path) -> int:
    return len(list(spool_dir.iterdir()))


def empty(spool_dir: Path) -> bool:
    return not spool_dir.exists() or not any(spool_dir.iterdir())


async def test_parts_are_spooled_with_headers_size_and_digest(tmp_path: Path) -> None:
    parts = await spool(chunked(frame(BODIES), 1 << 16), tmp_path / "spool")
    assert contents(parts) == BODIES
    assert [p.size for p in parts] == [len(b) for b in BODIES]
    assert [p.sha256 for p in parts] == [hashlib.sha256(b).digest() for b in BODIES]
    assert parts[1].headers == {"content-type": "application/dicom", "x-index": "1"}
    assert parts[0].content_type is not None and parts[0].content_type.essence == "application/dicom"
    assert len({p.path for p in parts}) == 3 and all(p.path.parent == tmp_path / "spool" for p in parts)
    for part in parts:
        part.discard()
        part.discard()
    assert empty(tmp_path / "spool")


@pytest.mark.parametrize("sizes", [(1,), (2,), (3,), (7,), (13, 1), (64,)])
async def test_any_chunking(tmp_path: Path, sizes: tuple[int, ...]) -> None:
    data = frame(BODIES, preamble=b"This is the preamble.\r\n", epilogue=b"\r\nepilogue")
    assert contents(await spool(chunked(data, *sizes), tmp_path)) == BODIES


async def test_every_split_point(tmp_path: Path) -> None:
    data = frame(BODIES)
    for cut in range(len(data) + 1):
        parts = await spool(split_at(data, cut), tmp_path / str(cut))
        assert contents(parts) == BODIES, cut


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary="quoted:b o u n d"', "quoted:b o u n d"),
        ("multipart/related; boundary=unquoted-0123; type=application/dicom", "unquoted-0123"),
        ("MULTIPART/RELATED; BOUNDARY=CaseMatters", "CaseMatters"),
    ],
)
async def test_boundary_forms(tmp_path: Path, header: str, boundary: str) -> None:
    data = frame(BODIES, boundary)
    parts = await spool_parts(chunked(data, 5), parse_content_type(header), tmp_path, LIMIT, LIMIT)
    assert contents(parts) == BODIES


async def test_preamble_and_epilogue_are_ignored(tmp_path: Path) -> None:
    preamble = b"--b0und4ry is mentioned here\r\nand --b0und4ryish too\r\n\r\n"
    data = frame([b"x"], preamble=preamble, epilogue=b"--b0und4ry\r\nnot a part\r\n")
    assert contents(await spool(chunked(data, 4), tmp_path)) == [b"x"]


async def test_part_without_headers(tmp_path: Path) -> None:
    data = (
        f"--{BOUNDARY}\r\n\r\nbare\r\n--{BOUNDARY}\r\nContent-Type: garbage\r\n\r\nx\r\n--{BOUNDARY}--"
    ).encode()
    parts = await spool(chunked(data, 3), tmp_path)
    assert [(p.headers, p.content_type) for p in parts] == [({}, None), ({"content-type": "garbage"}, None)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(BODIES)[:-20], "truncated"),
        (frame(BODIES)[: -len(f"--{BOUNDARY}--\r\n")], "truncated"),  # no closing delimiter
        (frame(BODIES)[:10], "truncated"),
        (b"", "no boundary"),
        (b"just some bytes, no multipart here", "no boundary"),
        (f"--{BOUNDARY}--\r\n".encode(), "no parts"),
        (f"--{BOUNDARY}\r\nBad Header: x\r\n\r\nbody\r\n--{BOUNDARY}--".encode(), "malformed"),
        (f"--{BOUNDARY}junk\r\n\r\nbody\r\n--{BOUNDARY}--".encode(), "no parts"),  # a preamble
        (f"--{BOUNDARY}\r\n\r\nbody\r\n--{BOUNDARY}junk\r\n".encode(), "truncated"),
        (f"--{BOUNDARY}\r\nA: b\r\n\r\nbody\r\n--{BOUNDARY}\r\nA: \rb\r\n".encode(), "malformed"),
        (f"--{BOUNDARY}\r\nNo-Colon\r\n\r\nbody\r\n--{BOUNDARY}--".encode(), "malformed"),
        (b"\x00\xff" * 40000, "no boundary"),
    ],
)
async def test_malformed_bodies(tmp_path: Path, data: bytes, reason: str) -> None:
    for sizes in ((1 << 16,), (3,)):
        if len(data) > 1000 and sizes == (3,):
            continue
        with pytest.raises(BadRequest, match=reason):
            await spool(chunked(data, *sizes), tmp_path)
        assert empty(tmp_path)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ('multipart/related; type="application/dicom"', BadRequest),
        ('multipart/related; boundary=""', BadRequest),
        ("multipart/related; boundary=" + "x" * 300, BadRequest),
        ("application/dicom; boundary=x", UnsupportedMediaType),
    ],
)
async def test_bad_content_type(tmp_path: Path, header: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await spool_parts(chunked(frame(BODIES), 10), parse_content_type(header), tmp_path, LIMIT, LIMIT)


async def test_oversize_part_stops_reading_and_cleans_up(tmp_path: Path) -> None:
    data = frame([b"a" * 100, b"b" * 5000, b"c" * 100])
    pulled = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal pulled
        async for chunk in chunked(data, 256):
            pulled += 1
            yield chunk

    with pytest.raises(PayloadTooLarge, match="part"):
        await spool(counting(), tmp_path, part=4096)
    assert empty(tmp_path)
    assert pulled * 256 < 4096 + 100 + 512  # stopped within a chunk of the limit


async def test_part_exactly_at_limit(tmp_path: Path) -> None:
    parts = await spool(chunked(frame([b"x" * 4096]), 1000), tmp_path, part=4096)
    assert [p.size for p in parts] == [4096]


async def test_oversize_body(tmp_path: Path) -> None:
    data = frame(BODIES)
    with pytest.raises(PayloadTooLarge, match="body"):
        await spool(chunked(data, 7), tmp_path, body=len(data) - 1)
    assert empty(tmp_path)
    assert len(await spool(chunked(data, 7), tmp_path, body=len(data))) == 3


async def test_cancellation_mid_stream_cleans_up(tmp_path: Path) -> None:
    data = frame([b"a" * 3000, b"b" * 3000])
    halfway = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield data[:4500]  # the first part whole, the second begun
        halfway.set()
        await asyncio.Event().wait()
        yield data[4500:]

    task = asyncio.create_task(spool(stalls(), tmp_path))
    await halfway.wait()
    await asyncio.sleep(0.05)
    assert count(tmp_path) == 2  # the first part spooled, the second being spooled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert empty(tmp_path)


async def test_stream_error_cleans_up(tmp_path: Path) -> None:
    async def fails() -> AsyncIterator[bytes]:
        yield frame([b"a" * 100, b"b"])[:150]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await spool(fails(), tmp_path)
    assert empty(tmp_path)


async def test_on_part_runs_while_the_body_still_arrives(tmp_path: Path) -> None:
    data = frame(BODIES)
    first_seen = asyncio.Event()

    async def gated() -> AsyncIterator[bytes]:
        delimiter = f"\r\n--{BOUNDARY}\r\n".encode()
        cut = data.index(delimiter) + len(delimiter)  # the first part is complete
        yield data[:cut]
        await asyncio.wait_for(first_seen.wait(), 5)  # only the callback can release this
        yield data[cut:]

    async def on_part(part: SpooledPart) -> int:
        first_seen.set()
        return len(await asyncio.to_thread(part.path.read_bytes))

    results = await spool_parts(gated(), CONTENT_TYPE, tmp_path, LIMIT, LIMIT, on_part)
    assert [(part.size, size) for part, size in results] == [(len(b), len(b)) for b in BODIES]


async def test_on_part_failure_aborts_and_cleans_up(tmp_path: Path) -> None:
    async def on_part(part: SpooledPart) -> None:
        if part.headers["x-index"] == "1":
            raise ValueError("bad part")
        await asyncio.sleep(0)

    with pytest.raises(ValueError, match="bad part"):
        await spool_parts(chunked(frame(BODIES), 1), CONTENT_TYPE, tmp_path, LIMIT, LIMIT, on_part)
    assert empty(tmp_path)


async def test_failure_cancels_pending_callbacks(tmp_path: Path) -> None:
    cancelled = asyncio.Event()

    async def slow(part: SpooledPart) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(BadRequest, match="truncated"):
        await spool_parts(chunked(frame(BODIES)[:-5], 9), CONTENT_TYPE, tmp_path, LIMIT, LIMIT, slow)
    assert cancelled.is_set()
    assert empty(tmp_path)


async def test_headers_parsed_as_parts_arrive(tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small_RLE.dcm"]
    files = [Path(get_testdata_file(name) or "") for name in names]
    data = frame([f.read_bytes() for f in files])

    async def parse(part: SpooledPart) -> ParsedInstance:
        return await asyncio.to_thread(read_header, part.path)

    results = await spool_parts(chunked(data, 4096), CONTENT_TYPE, tmp_path, LIMIT, LIMIT, parse)
    assert [parsed.sop_instance_uid for _, parsed in results] == [
        read_header(f).sop_instance_uid for f in files
    ]


# -- the writer's output, read back -----------------------------------------------------


async def stream(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_writer_output_round_trips(tmp_path: Path) -> None:
    boundary = multipart_boundary()
    assert boundary != multipart_boundary() and len(boundary) == 32
    bodies = [b"\r\n--" + boundary.encode() + b"-", b"", bytes(range(256)) * 20]

    async def parts() -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
        for index, body in enumerate(bodies):
            yield (
                {"Content-Type": "application/dicom", "Content-ID": f"<{index}>"},
                stream(body[:7], body[7:]),
            )

    content_type = related_content_type(boundary, "application/dicom")
    assert content_type == f'multipart/related; type="application/dicom"; boundary={boundary}'
    data = await collect(stream_multipart(parts(), boundary))
    parsed = await spool_parts(chunked(data, 5, 11), parse_content_type(content_type), tmp_path, LIMIT, LIMIT)
    assert contents(parsed) == bodies
    assert [p.headers["content-id"] for p in parsed] == ["<0>", "<1>", "<2>"]
