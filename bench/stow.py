"""STOW-RS figures: the corpus loaded by concurrent clients, and the large instance
streamed alone while the server's memory is watched."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from bench.corpus import MIB, InstanceWriter, LargeInstance, Study
from bench.measure import Measurement, Unavailable, percentile
from bench.process import reset_tree_peak, tree_memory
from bench.targets import Target

#: PS3.18 §10.5.3: FailedSOPSequence in the STOW-RS response.
FAILED_SOP_SEQUENCE = "00081198"
#: Throughput windows per load: enough for a median and a tail.
WINDOWS = 15


class StowFailed(RuntimeError):
    """A STOW the rest of the run depends on did not store everything."""


@dataclass(frozen=True)
class StowRequest:
    body: bytes
    content_type: str
    instances: int
    #: Where each instance's Part 10 bytes lie in ``body``: (offset, length).
    spans: tuple[tuple[int, int], ...] = ()
    #: The instances' SOP Instance UIDs, in the same order (when known).
    sop_uids: tuple[str, ...] = ()

    def part(self, index: int) -> memoryview:
        """The ``index``-th instance's Part 10 bytes, without a copy."""
        offset, length = self.spans[index]
        return memoryview(self.body)[offset : offset + length]


def multipart_head(boundary: str) -> bytes:
    return f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()


def multipart_tail(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


def content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def build_requests(writer: InstanceWriter, studies: Sequence[Study], per_request: int) -> list[StowRequest]:
    """The corpus as STOW-RS requests of ``per_request`` instances of one series each."""
    requests = []
    for study in studies:
        for series in study.series:
            instances = writer.series(study, series)
            for start in range(0, len(instances), per_request):
                chunk = slice(start, start + per_request)
                requests.append(stow_request(instances[chunk], series.instances[chunk]))
    return requests


def multipart(parts: Sequence[bytes | memoryview], boundary: str) -> bytes:
    """``parts`` framed as a ``multipart/related`` body of ``application/dicom`` parts
    (PS3.18 §8.7.3), the shape of a STOW-RS request and of a WADO-RS response.

    >>> multipart([b"ab", b"c"], "B").split(b"\\r\\n")  # doctest: +NORMALIZE_WHITESPACE
    [b'--B', b'Content-Type: application/dicom', b'', b'ab', b'--B',
     b'Content-Type: application/dicom', b'', b'c', b'--B--', b'']
    """
    return multipart_head(boundary) + _delimiter(boundary).join(parts) + multipart_tail(boundary)


def _delimiter(boundary: str) -> bytes:
    return f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()


def stow_request(parts: list[bytes], sop_uids: Sequence[str] = ()) -> StowRequest:
    """One STOW-RS request of ``parts`` (Part 10 instances, whose SOP Instance UIDs are
    ``sop_uids`` when known).

    >>> request = stow_request([b"ab", b"cde"], ["1.2.3", "1.2.4"])
    >>> bytes(request.part(0)), bytes(request.part(1)), request.sop_uids
    (b'ab', b'cde', ('1.2.3', '1.2.4'))
    """
    boundary = secrets.token_hex(16)
    spans, offset = [], len(multipart_head(boundary))
    for part in parts:
        spans.append((offset, len(part)))
        offset += len(part) + len(_delimiter(boundary))
    body = multipart(parts, boundary)
    return StowRequest(body, content_type(boundary), len(parts), tuple(spans), tuple(sop_uids))


def check_stored(response: httpx.Response, expected: int) -> None:
    """Every instance stored: 200, and no FailedSOPSequence items (Orthanc sends the
    sequence even when it is empty, so its presence alone means nothing)."""
    failed = None
    if response.headers.get("content-type", "").startswith("application/dicom+json"):
        failed = response.json().get(FAILED_SOP_SEQUENCE, {}).get("Value")
    if response.status_code != 200 or failed:
        raise StowFailed(
            f"STOW of {expected} instance(s) answered {response.status_code}: {response.text[:500]}"
        )


#: When a request completed, its instances, and how long it took (seconds).
Completion = tuple[float, int, float]


def store_small(target: Target, requests: Sequence[StowRequest], clients: int, warmup: int) -> Measurement:
    """Load ``requests`` with ``clients`` concurrent clients, each on its own keep-alive
    connection; the first ``warmup`` requests go first, alone, unmeasured. Samples are
    instances/s over consecutive windows of completed requests."""
    with target.client() as client:
        for request in requests[:warmup]:
            post(client, target, request)
    pending, lock, failed = iter(requests[warmup:]), threading.Lock(), threading.Event()
    began = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="stow") as pool:
        futures = [pool.submit(_client, target, pending, lock, failed) for _ in range(clients)]
        completions = sorted(completion for future in futures for completion in future.result())
    return _throughput(began, completions, clients)


def _client(
    target: Target, pending: Iterator[StowRequest], lock: threading.Lock, failed: threading.Event
) -> list[Completion]:
    """One client: take the next request until none is left (or another client failed)."""
    completions = []
    with target.client() as client:
        while not failed.is_set():
            with lock:
                request = next(pending, None)
            if request is None:
                break
            began = time.perf_counter()
            try:
                post(client, target, request)
            except Exception:
                failed.set()
                raise
            done = time.perf_counter()
            completions.append((done, request.instances, done - began))
    return completions


def post(client: httpx.Client, target: Target, request: StowRequest) -> None:
    """Store one request's instances, all of them or raise :class:`StowFailed`."""
    response = client.post(
        target.url("/studies"),
        content=request.body,
        headers={"Content-Type": request.content_type, "Accept": "application/dicom+json"},
    )
    check_stored(response, request.instances)


def _throughput(began: float, completions: list[Completion], clients: int) -> Measurement:
    # Windows of at least two requests per client: shorter ones measure how completions of
    # concurrent requests happen to interleave rather than the rate.
    size = max(2 * clients, len(completions) // WINDOWS)
    samples, start = [], began
    for first in range(0, len(completions) - size + 1, size):
        window = completions[first : first + size]
        end = window[-1][0]
        samples.append(sum(instances for _, instances, _ in window) / (end - start))
        start = end
    total = sum(instances for _, instances, _ in completions)
    latencies = [seconds * 1000 for _, _, seconds in completions]
    return Measurement(
        samples=samples,
        detail={
            "instances": total,
            "requests": len(completions),
            "overall_instances_per_s": total / (completions[-1][0] - began) if completions else None,
            "request_ms_median": percentile(latencies, 50) if latencies else None,
            "request_ms_p90": percentile(latencies, 90) if latencies else None,
        },
    )


def store_large(
    target: Target, large: LargeInstance, sop_uids: Sequence[str]
) -> tuple[Measurement, Measurement]:
    """Stream ``large`` once per UID (the first time as a warm-up); returns MiB/s, and the
    server's peak RSS during each upload over its RSS before the first one (so memory
    kept from one upload to the next counts too), in MiB. RSS is summed over the server's
    process tree (its workers), and so is the peak: the sum of each process's peak, an
    upper bound of the tree's."""
    rate = Measurement()
    growth = Measurement(unavailable=None if target.pid else "n/a (server not local)")
    baseline = _resident(target.pid, growth)
    with target.client() as client:
        for index, sop_uid in enumerate(sop_uids):
            watched = baseline is not None and _reset_peak(target.pid, growth)
            seconds, size = _post_large(client, target, large, sop_uid)
            if index == 0:
                continue
            rate.samples.append(size / MIB / seconds)
            if watched and target.pid and baseline is not None:
                growth.samples.append((tree_memory(target.pid, "VmHWM") - baseline) / MIB)
    return rate, growth


def store_huge(target: Target, huge: LargeInstance, sop_uid: str) -> Measurement:
    """Stream ``huge`` once; the figure is the server's peak RSS during the upload over its
    RSS just before it, in MiB (summed over its process tree, as for :func:`store_large`).
    A target that refuses or fails the upload gets ``n/a``: this figure comes last, and must
    not cost the target its other figures."""
    growth = Measurement(unavailable=None if target.pid else "n/a (server not local)")
    baseline = _resident(target.pid, growth)
    watched = baseline is not None and _reset_peak(target.pid, growth)
    try:
        with target.client() as client:
            seconds, size = _post_large(client, target, huge, sop_uid)
    except (StowFailed, httpx.HTTPError) as error:
        return Measurement(unavailable=f"n/a ({type(error).__name__}: {str(error)[:80]})")
    growth.detail = {"mib": size / MIB, "seconds": seconds, "mib_per_s": size / MIB / seconds}
    if watched and target.pid and baseline is not None:
        growth.samples.append((tree_memory(target.pid, "VmHWM") - baseline) / MIB)
    return growth


def _resident(pid: int | None, growth: Measurement) -> int | None:
    """The RSS of the process tree of ``pid`` now; None (and ``growth`` marked n/a) if it
    cannot be read."""
    if pid is None:
        return None
    try:
        return tree_memory(pid, "VmRSS")
    except Unavailable as unavailable:
        growth.unavailable = f"n/a ({unavailable.reason})"
        return None


def _reset_peak(pid: int | None, growth: Measurement) -> bool:
    if pid is None or growth.unavailable:
        return False
    try:
        reset_tree_peak(pid)
    except Unavailable as unavailable:
        growth.unavailable = f"n/a ({unavailable.reason})"
        return False
    return True


def _post_large(
    client: httpx.Client, target: Target, large: LargeInstance, sop_uid: str
) -> tuple[float, int]:
    boundary = secrets.token_hex(16)
    head = multipart_head(boundary) + large.header_for(sop_uid)
    tail = multipart_tail(boundary)
    instance_size = len(head) - len(multipart_head(boundary)) + large.pixel_bytes

    def chunks() -> Iterator[bytes]:
        yield head
        yield from large.pixel_chunks()
        yield tail

    # An explicit length rather than chunked encoding, which not every server accepts.
    length = len(head) + large.pixel_bytes + len(tail)
    began = time.perf_counter()
    response = client.post(
        target.url("/studies"),
        content=chunks(),
        headers={
            "Content-Type": content_type(boundary),
            "Content-Length": str(length),
            "Accept": "application/dicom+json",
        },
    )
    seconds = time.perf_counter() - began
    check_stored(response, 1)
    return seconds, instance_size
