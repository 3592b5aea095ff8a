"""The physical ceiling: Debian's nginx serving the same stored bytes as static files over
loopback, timed by the same client loop as the archives, so a retrieval figure can be read
as a fraction of what the machine can move at all.

nginx is started and stopped here, as an unprivileged process (``nobody`` when the
benchmark runs as root) with its own prefix, configuration and logs in a temporary
directory, on a free loopback port, with keep-alive and ``sendfile`` on. Its document root
holds, for the requests the retrieval figures draw (the same RNG seeds, so the same
studies, series and instances):

- ``instances/<SOP Instance UID>.dcm``: an instance's Part 10 bytes, as stored;
- ``series/<UID>.multipart`` and ``studies/<UID>.multipart``: the same bytes framed as one
  ``multipart/related`` body, the shape of the WADO-RS response (PS3.18 §8.7.3);
- ``ping``: two bytes, the floor under every request.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from bench.measure import Measurement, Plan, Unavailable, repeat
from bench.services import free_port
from bench.stow import multipart
from bench.targets import NGINX, Target
from bench.workload import WADO, Catalog, Draw, Read, brief, measure_ping, measure_reads

NGINX_BINARY = Path("/usr/sbin/nginx")
#: One boundary for every static multipart file, so one Content-Type serves them all.
BOUNDARY = "0123456789abcdef0123456789abcdef"
#: The retrieval figures nginx also serves.
RETRIEVALS = ("wado.instance", "wado.series", "wado.study")
#: The study retrieval again, as the study's instance files, one request each.
STUDY_FILES = "wado.study_files"
READY_TIMEOUT = 10.0
#: The unprivileged user nginx runs as when the benchmark runs as root.
UNPRIVILEGED = "nobody"

CONFIG = """\
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ application/dicom dcm; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/site;
        location /studies/ {{
            types {{ }}
            default_type 'multipart/related; type="application/dicom"; boundary={boundary}';
        }}
        location /series/ {{
            types {{ }}
            default_type 'multipart/related; type="application/dicom"; boundary={boundary}';
        }}
    }}
}}
"""


def static_path(path: str) -> str:
    """The static file that stands for a WADO-RS retrieval path.

    >>> static_path("/studies/1.2"), static_path("/studies/1.2/series/3.4")
    ('/studies/1.2.multipart', '/series/3.4.multipart')
    >>> static_path("/studies/1.2/series/3.4/instances/5.6")
    '/instances/5.6.dcm'
    """
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "studies":
        return f"/studies/{parts[1]}.multipart"
    if len(parts) == 4 and parts[2] == "series":
        return f"/series/{parts[3]}.multipart"
    if len(parts) == 6 and parts[4] == "instances":
        return f"/instances/{parts[5]}.dcm"
    raise ValueError(f"no static file for {path}")


#: An instance's Part 10 bytes by SOP Instance UID.
Instances = Callable[[str], bytes | memoryview]


def write_site(site: Path, catalog: Catalog, plan: Plan, seed: int, instance: Instances) -> int:
    """The files the retrieval figures' requests stand for; returns their total bytes."""
    by_study = {study.uid: study for study in catalog.studies}
    series_of = {series.uid: series for study in catalog.studies for series in study.series}
    written = 0

    def write(relative: str, data: bytes | memoryview) -> None:
        nonlocal written
        path = site / relative.lstrip("/")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written += len(data)

    for read in _reads(catalog, plan, seed):
        parts = read.path.strip("/").split("/")
        if len(parts) == 6:
            write(static_path(read.path), instance(parts[5]))
            continue
        sops = (
            [sop for series in by_study[parts[1]].series for sop in series.instances]
            if len(parts) == 2
            else list(series_of[parts[3]].instances)
        )
        for sop in sops:
            write(f"/instances/{sop}.dcm", instance(sop))
        write(static_path(read.path), multipart([instance(sop) for sop in sops], BOUNDARY))
    write("/ping", b"ok")
    return written


def _reads(catalog: Catalog, plan: Plan, seed: int) -> Iterator[Read]:
    for key in RETRIEVALS:
        # The same seed as measure_reads's for this figure: the same requests.
        draw = Draw(catalog, random.Random(f"{seed}:{key}"))  # noqa: S311 (not secret)
        for _ in range(plan.runs):
            yield WADO[key](draw)


@dataclass(frozen=True)
class Nginx:
    url: str
    version: str
    #: Its master process.
    pid: int


def nginx_version(binary: Path = NGINX_BINARY) -> str | None:
    """``nginx/1.22.1``, or None when Debian's nginx is not installed."""
    if not binary.exists():
        return None
    shown = subprocess.run([str(binary), "-v"], capture_output=True, text=True, check=False)
    return (shown.stderr or shown.stdout).strip().removeprefix("nginx version: ") or "nginx"


@contextlib.contextmanager
def serve_static(prefix: Path, port: int, binary: Path = NGINX_BINARY) -> Iterator[Nginx]:
    """nginx serving ``prefix/site`` on ``127.0.0.1:port``, stopped on exit. ``prefix`` must
    be a directory of its own (e.g. from :func:`tempfile.mkdtemp`): it is handed to the
    unprivileged user when run as root, so its parents must let that user through."""
    version = nginx_version(binary)
    if version is None:
        raise Unavailable("no nginx")
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "site").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(CONFIG.format(prefix=prefix, port=port, boundary=BOUNDARY))
    owner = _unprivileged(prefix)
    command = [str(binary), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    # What nginx says before its error log is open (a prefix it cannot read, a bad
    # configuration) goes to a file of ours, whoever nginx runs as.
    output = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        user=owner[0] if owner else None,
        group=owner[1] if owner else None,
        extra_groups=[] if owner else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, prefix, output)
        yield Nginx(url, version, process.pid)
    finally:
        output.close()
        # SIGTERM: nginx's fast shutdown, master and workers.
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _unprivileged(prefix: Path) -> tuple[int, int] | None:
    """The user and group to drop root for, ``nobody``'s (which then owns ``prefix``); None
    when the benchmark is not root (nginx then runs as the benchmark's own user)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED)
    except KeyError as error:
        raise Unavailable(f"no user {UNPRIVILEGED} to run nginx as") from error
    for directory, _, files in os.walk(prefix):
        for path in (directory, *(os.path.join(directory, name) for name in files)):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    # The temporary directory's parents must let nobody through (mkdtemp makes it 0700).
    prefix.chmod(0o755)
    return entry.pw_uid, entry.pw_gid


def _wait_ready(url: str, process: subprocess.Popen[bytes], prefix: Path, output: IO[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/ping", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    output.seek(0)
    log = prefix / "error.log"
    said = output.read().decode(errors="replace") + (log.read_text(errors="replace") if log.exists() else "")
    raise Unavailable(f"nginx did not start: {said.strip()[-600:] or 'no output'}")


def static_target(url: str) -> Target:
    """nginx as a target of the read loop: retrieval paths mapped to their static files."""
    return Target(NGINX, url, None, ping=url + "/ping", rewrite=static_path)


def measure_ceiling(
    catalog: Catalog, plan: Plan, seed: int, instance: Instances, binary: Path = NGINX_BINARY
) -> dict[str, Measurement]:
    """nginx's figures: the retrievals, the study as its files, and the round trip; every
    one ``n/a (reason)`` when nginx is absent or does not start."""
    keys = ("http.ping", *RETRIEVALS, STUDY_FILES)
    prefix = Path(tempfile.mkdtemp(prefix="filmless-bench-nginx-"))
    try:
        written = write_site(prefix / "site", catalog, plan, seed, instance)
        print(f"{NGINX}: {written / (1 << 20):.0f} MiB of static files", flush=True)
        with serve_static(prefix, free_port(), binary) as nginx:
            target = static_target(nginx.url)
            print(f"{NGINX}: {nginx.version} at {nginx.url}", flush=True)
            results = {"http.ping": measure_ping(target, plan)}
            results |= measure_reads(target, {key: WADO[key] for key in RETRIEVALS}, catalog, plan, seed)
            results[STUDY_FILES] = measure_study_files(target, catalog, plan, seed)
            results["http.ping"].detail["version"] = nginx.version
            return results
    except Unavailable as unavailable:
        print(f"{NGINX}: n/a ({unavailable.reason})", flush=True)
        return {key: Measurement(unavailable=f"n/a ({unavailable.reason})") for key in keys}
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def measure_study_files(target: Target, catalog: Catalog, plan: Plan, seed: int) -> Measurement:
    """The study retrievals' studies (the same draws), each fetched as its instance files
    one after the other on the keep-alive connection: MiB/s over the whole study."""
    draw = Draw(catalog, random.Random(f"{seed}:wado.study"))  # noqa: S311 (not secret)
    reads = [WADO["wado.study"](draw) for _ in range(plan.runs)]
    by_study = {study.uid: study for study in catalog.studies}
    with target.client() as client:

        def probe(index: int) -> float:
            study = by_study[reads[index].path.rsplit("/", 1)[1]]
            urls = [f"{target.root}/instances/{sop}.dcm" for s in study.series for sop in s.instances]
            size, began = 0, time.perf_counter()
            for url in urls:
                response = client.get(url)
                if response.status_code != 200:
                    raise Unavailable(str(response.status_code))
                size += len(response.content)
            return size / (1 << 20) / (time.perf_counter() - began)

        measurement = repeat(plan, probe)
    print(f"  {target.name:<14} {STUDY_FILES:<26} {brief(measurement, 'MiB/s')}", flush=True)
    return measurement
