"""Soak: a bounded mixed load (STOW, QIDO, WADO, frames, rendered) on a two-worker server
for ``FILMLESS_SOAK_SECONDS`` (120 by default): no error at all, memory roughly flat (the
workers' RSS at the start and the end), and each transaction's p99 latency printed."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from tests.reliability.conftest import REQUEST_TIMEOUT, Node, node_env, node_token
from tests.samples import Sample, make_sample, multipart_body

SECONDS = float(os.environ.get("FILMLESS_SOAK_SECONDS", "120"))
CLIENTS = 4
SEED = 20261202


def _rss(node: Node) -> int:
    total = 0
    for pid in node.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _request(client: httpx.Client, rng: random.Random, stored: list[Sample]) -> tuple[str, httpx.Response]:
    kind = rng.choice(["stow", "qido", "wado", "frames", "rendered"])
    sample = rng.choice(stored)
    instance = f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    if kind == "stow":
        new = make_sample(rng.choice(["ct", "mr"]), PatientID=f"SOAK{rng.randrange(50)}")
        body, ctype = multipart_body([new.data])
        response = client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
        if response.status_code == 200:
            stored.append(new)
        return kind, response
    if kind == "qido":
        return kind, client.get("/dicom-web/studies", params={"PatientID": f"SOAK{rng.randrange(50)}"})
    if kind == "wado":
        return kind, client.get(instance, headers={"Accept": 'multipart/related; type="application/dicom"'})
    if kind == "frames":
        accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
        return kind, client.get(instance + "/frames/1", headers={"Accept": accept})
    return kind, client.get(instance + "/rendered", headers={"Accept": "image/jpeg"})


def test_soak_mixed_load_has_no_errors_and_flat_memory(make_node, clean_db, tmp_path, signing_key):
    node = make_node(node_env(clean_db, tmp_path / "data", signing_key, FILMLESS_WORKERS="2"))
    node.start()
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    stored: list[Sample] = []
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        for name in ("ct", "mr", "ct", "mr"):
            sample = make_sample(name, PatientID="SOAK0")
            body, ctype = multipart_body([sample.data])
            assert (
                client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
                == 200
            )
            stored.append(sample)
        rng = random.Random(SEED)  # noqa: S311 (a reproducible load, not a secret)
        for _ in range(100):  # warm up: caches, pools, lazily imported codecs
            assert _request(client, rng, stored)[1].status_code == 200
    rss_start = _rss(node)

    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[tuple[str, int, str]] = []
    deadline = time.monotonic() + SECONDS

    def run(seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 (a reproducible load, not a secret)
        with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    kind, response = _request(client, rng, stored)
                except httpx.HTTPError as exc:
                    errors.append(("transport", 0, repr(exc)))
                    continue
                latencies[kind].append(time.perf_counter() - began)
                if response.status_code != 200:
                    errors.append((kind, response.status_code, response.text[:200]))

    threads = [threading.Thread(target=run, args=(SEED + i,)) for i in range(1, CLIENTS + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + REQUEST_TIMEOUT + 10)
        assert not thread.is_alive()
    rss_end = _rss(node)

    total = sum(len(v) for v in latencies.values())
    print(
        f"\nsoak: {SECONDS:.0f} s, seed {SEED}, {CLIENTS} clients, 2 workers, "
        f"{total} requests, {len(errors)} errors"
    )
    for kind, values in sorted(latencies.items()):
        values.sort()
        p50, p99 = values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"  {kind:9} {len(values):6} requests  p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms")
    print(
        f"  RSS of the server's processes: {rss_start / 2**20:.0f} MiB at the start, "
        f"{rss_end / 2**20:.0f} MiB at the end"
    )
    assert not errors, errors[:5]
    assert total >= 100
    # Generous: allocator noise and caches filling (the thumbnail cache is bounded) are not
    # a leak; a leak of a few KiB per request over thousands of requests would pass this.
    assert rss_end < rss_start * 1.5 + 64 * 2**20
