"""Two ``filmless serve`` nodes on one PostgreSQL and one S3 bucket, behind nginx: what one
stores the other serves; what one revokes, removes or deletes the other refuses as soon as
the notice reaches it, even where it had cached it; both migrate an empty database at once, and it is migrated
once. Then a backup (pg_dump, the bucket's objects, the keys) is restored into a fresh
database and bucket, and a third node reads a study and opens a share from it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import boto3
import httpx
import pytest

from app.repository.migrations import load
from harness.servers import S3Server, settings_for
from tests.fixtures import token
from tests.samples import make_sample, multipart_body

NGINX = Path("/usr/sbin/nginx")
pytestmark = pytest.mark.skipif(not NGINX.exists(), reason="Debian's nginx is not installed")

PG_BIN = Path(asyncpg.__file__).parents[1] / "pgserver" / "pginstall" / "bin"
DICOM = {"Accept": 'multipart/related; type="application/dicom"'}
#: How long a change on one node may take to reach the other (a NOTIFY is delivered in
#: milliseconds; the bound only keeps a failure from hanging the test).
PROPAGATION = 5.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _create_database(url: str, name: str) -> str:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _database_url(url, name)


async def _sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    return asyncio.run(_sql(url, query, *args))


@dataclass
class Node:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def _start_node(env: dict[str, str], data_dir: Path, log: Path) -> Node:
    port = _free_port()
    node_env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    node_env |= env | {"FILMLESS_PORT": str(port), "FILMLESS_DATA_DIR": str(data_dir)}
    out = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=node_env, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    return Node(f"http://127.0.0.1:{port}", process, log)


def _wait_ready(node: Node) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"a node exited:\n{node.log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(node.url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"a node did not become ready:\n{node.log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait()


NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format upstreams '$upstream_addr';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream filmless {{
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://filmless;
            proxy_http_version 1.1;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


@contextlib.contextmanager
def _nginx(directory: Path, port: int, a: str, b: str) -> Iterator[str]:
    directory.mkdir()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, a=urlsplit(a).port, b=urlsplit(b).port, port=port))
    process = subprocess.Popen(
        [
            str(NGINX),
            "-p",
            str(directory),
            "-c",
            str(conf),
            "-e",
            str(directory / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((directory / "error.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield url
    finally:
        _stop(process)


def _until(check: Callable[[], bool], what: str) -> float:
    """Seconds until ``check()`` holds (polled); fails after :data:`PROPAGATION`."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > PROPAGATION:
            pytest.fail(f"not within {PROPAGATION}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - began


def _later(days: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


def _copy_bucket(s3: S3Server, source: str, target: str) -> int:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
    )
    client.create_bucket(Bucket=target)
    copied = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source):
        for item in page.get("Contents", []):
            client.copy_object(
                Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]}
            )
            copied += 1
    return copied


def test_two_nodes_behind_nginx(
    postgres_url: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path, signing_key: Path
) -> None:
    database = "nodes_" + secrets.token_hex(4)
    db = asyncio.run(_create_database(postgres_url, database))
    proxy_port = _free_port()
    env = {
        "FILMLESS_DATABASE_URL": db,
        "FILMLESS_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "FILMLESS_S3_BUCKET": s3_bucket,
        "FILMLESS_S3_ACCESS_KEY_ID": s3_server.access_key,
        "FILMLESS_S3_SECRET_ACCESS_KEY": s3_server.secret_key,
        "FILMLESS_S3_REGION": s3_server.region,
        "FILMLESS_AUTH_LOCAL_KEY_FILE": str(signing_key),
        "FILMLESS_WORKERS": "1",
        # One share key for every node, as a deployment keeps it in one place.
        "FILMLESS_SHARE_KEY_FILE": str(tmp_path / "share-key"),
        "FILMLESS_TRUSTED_PROXIES": '["127.0.0.1"]',
        "FILMLESS_BASE_URL": f"http://127.0.0.1:{proxy_port}",
        "FILMLESS_DICOM_PORT": "0",
        "FILMLESS_SWEEP_INTERVAL": "1",
    }
    settings = settings_for(db, None, None, tmp_path / "tokens", auth_local_key_file=signing_key)
    admin = {"Authorization": f"Bearer {token(settings, 'LOCAL')}"}
    # Both start at once on an empty database: each migrates, under the advisory lock.
    a = _start_node(env, tmp_path / "a", tmp_path / "a.log")
    b = _start_node(env, tmp_path / "b", tmp_path / "b.log")
    nodes = [a, b]
    try:
        _wait_ready(a)
        _wait_ready(b)
        versions = sql(db, "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
        assert sorted(r["version"] for r in versions) == [m.version for m in load()]
        assert all(r["n"] == 1 for r in versions)
        assert [r["code"] for r in sql(db, "SELECT code FROM hospitals")] == ["LOCAL"]

        with _nginx(tmp_path / "nginx", proxy_port, a.url, b.url) as proxy:
            _stores_on_one_and_serves_on_the_other(a, b, proxy, admin)
            _hospital_removal_reaches_the_other_node(a, b, db, settings, admin)
            _a_lost_listener_misses_nothing(b, db, settings, admin)
            _share_revocation_reaches_the_other_node(a, b, admin)
            _study_deletion_reaches_the_other_node(a, b, db, admin)
            kept = _backup_material(a, admin)
        for node in nodes:
            log = node.log.read_text(errors="replace")
            assert "sweep failed" not in log and "Traceback" not in log, log

        # --- Backup and restore: database, objects, keys -----------------------------------
        dump = tmp_path / "backup.dump"
        subprocess.run(
            [str(PG_BIN / "pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={db}"], check=True
        )
        shutil.copy(tmp_path / "share-key", tmp_path / "share-key.backup")
        for node in nodes:
            _stop(node.process)
        restored_db = asyncio.run(_create_database(postgres_url, database + "_restored"))
        subprocess.run(
            [str(PG_BIN / "pg_restore"), "--no-owner", f"--dbname={restored_db}", str(dump)], check=True
        )
        restored_bucket = "restored-" + secrets.token_hex(4)
        assert _copy_bucket(s3_server, s3_bucket, restored_bucket) > 0
        (tmp_path / "restored").mkdir()
        shutil.copy(tmp_path / "share-key.backup", tmp_path / "restored" / "share-key")
        c = _start_node(
            env
            | {
                "FILMLESS_DATABASE_URL": restored_db,
                "FILMLESS_S3_BUCKET": restored_bucket,
                "FILMLESS_SHARE_KEY_FILE": str(tmp_path / "restored" / "share-key"),
            },
            tmp_path / "c",
            tmp_path / "c.log",
        )
        nodes.append(c)
        _wait_ready(c)
        sample, share = kept
        path = f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
        got = httpx.get(c.url + path, headers=admin | DICOM, timeout=30)
        assert got.status_code == 200 and sample.data in got.content
        root = f"{c.url}/share/{share['token']}/dicom-web"
        found = httpx.get(f"{root}/studies", timeout=10)
        assert found.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in found.json()] == [sample.study]
        opened = httpx.get(f"{c.url}/s/{share['token']}", timeout=10)
        assert opened.status_code == 303
    finally:
        for node in nodes:
            _stop(node.process)


def _store(node: str, headers: dict[str, str], **attributes: str):  # type: ignore[no-untyped-def]
    sample = make_sample("ct", **attributes)
    body, content_type = multipart_body([sample.data])
    stored = httpx.post(
        node + "/dicom-web/studies",
        content=body,
        headers=headers | {"Content-Type": content_type},
        timeout=30,
    )
    assert stored.status_code == 200, stored.text
    return sample


def _stores_on_one_and_serves_on_the_other(a: Node, b: Node, proxy: str, admin: dict[str, str]) -> None:
    sample = _store(a.url, admin, PatientID="NODES-1")
    found = httpx.get(b.url + "/dicom-web/studies", params={"PatientID": "NODES-1"}, headers=admin).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [sample.study]
    # URLs in responses name the public address, not the node's.
    assert found[0]["00081190"]["Value"][0].startswith(proxy + "/dicom-web/studies/")
    path = f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    for base in (b.url, proxy, proxy):
        got = httpx.get(base + path, headers=admin | DICOM, timeout=30)
        assert got.status_code == 200 and sample.data in got.content
    # nginx spread the requests over both nodes.
    served_by = set((a.log.parent / "nginx" / "access.log").read_text().split())
    assert served_by == {urlsplit(a.url).netloc, urlsplit(b.url).netloc}


def _hospital_removal_reaches_the_other_node(
    a: Node, b: Node, db: str, settings: object, admin: dict[str, str]
) -> None:
    added = httpx.post(a.url + "/api/hospitals", json={"code": "REMOTE", "name": "Remote"}, headers=admin)
    assert added.status_code == 201, added.text
    remote = {"Authorization": f"Bearer {token(settings, 'REMOTE', ['reader'])}"}
    assert httpx.get(b.url + "/dicom-web/studies", headers=remote).status_code == 200
    # The cache is warm: with the row gone behind the archive's back (no notice), B still
    # takes the token. (The same request on A would too: only a notice makes them forget.)
    sql(db, "UPDATE hospitals SET removed_at = now() WHERE code = 'REMOTE'")
    assert httpx.get(b.url + "/dicom-web/studies", headers=remote).status_code == 200
    sql(db, "UPDATE hospitals SET removed_at = NULL WHERE code = 'REMOTE'")

    assert httpx.delete(a.url + "/api/hospitals/REMOTE", headers=admin).status_code == 204
    _until(lambda: httpx.get(b.url + "/dicom-web/studies", headers=remote).status_code == 403, "B refuses")
    assert httpx.get(a.url + "/dicom-web/studies", headers=remote).status_code == 403


def _a_lost_listener_misses_nothing(b: Node, db: str, settings: object, admin: dict[str, str]) -> None:
    added = httpx.post(b.url + "/api/hospitals", json={"code": "CUTOFF", "name": "Cut off"}, headers=admin)
    assert added.status_code == 201
    cutoff = {"Authorization": f"Bearer {token(settings, 'CUTOFF', ['reader'])}"}
    assert httpx.get(b.url + "/dicom-web/studies", headers=cutoff).status_code == 200
    listening = "SELECT pid FROM pg_stat_activity WHERE application_name = 'filmless-invalidations'"
    before = {r["pid"] for r in sql(db, listening)}
    assert len(before) == 2
    # Every listener's connection cut, then a change nobody announces: a node that could
    # not hear must not trust what it cached.
    sql(db, listening.replace("SELECT pid", "SELECT pg_terminate_backend(pid)"))
    sql(db, "UPDATE hospitals SET removed_at = now() WHERE code = 'CUTOFF'")
    _until(lambda: httpx.get(b.url + "/dicom-web/studies", headers=cutoff).status_code == 403, "B refuses")
    # Both listen again, on new connections.
    _until(lambda: len({r["pid"] for r in sql(db, listening)} - before) == 2, "listeners reconnect")


def _share_revocation_reaches_the_other_node(a: Node, b: Node, admin: dict[str, str]) -> None:
    sample = _store(a.url, admin, PatientID="NODES-2")
    body = {"studies": [sample.study], "expires_at": _later(days=7), "permissions": ["view", "download"]}
    share = httpx.post(a.url + "/api/shares", json=body, headers=admin).json()
    root = f"/share/{share['token']}/dicom-web/studies"
    # B remembers the opened secret; the revocation's notice makes it forget.
    assert httpx.get(b.url + root).status_code == 200
    assert httpx.get(b.url + root).status_code == 200
    assert httpx.post(f"{a.url}/api/shares/{share['id']}/revoke", headers=admin).status_code == 200
    assert httpx.get(a.url + root).status_code == 401
    _until(lambda: httpx.get(b.url + root).status_code == 401, "B refuses the revoked share")
    assert httpx.get(f"{b.url}/s/{share['token']}").status_code == 404


def _study_deletion_reaches_the_other_node(a: Node, b: Node, db: str, admin: dict[str, str]) -> None:
    sample = _store(a.url, admin, PatientID="NODES-3")
    thumbnail = (
        f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}/thumbnail"
    )
    first = httpx.get(b.url + thumbnail, headers=admin, timeout=30)
    assert first.status_code == 200
    # B saves what it rendered after answering; then its memory holds it: with its stored
    # copy forgotten, B still answers and renders nothing (rendering would record a new
    # derived object).
    _until(lambda: sql(db, "SELECT count(*) AS n FROM derived_objects")[0]["n"] == 1, "B saves the thumbnail")
    sql(db, "DELETE FROM derived_objects")
    again = httpx.get(b.url + thumbnail, headers=admin, timeout=30)
    assert again.status_code == 200 and again.content == first.content
    assert sql(db, "SELECT count(*) AS n FROM derived_objects")[0]["n"] == 0

    assert httpx.delete(f"{a.url}/dicom-web/studies/{sample.study}", headers=admin).status_code in (
        200,
        202,
        204,
    )
    assert httpx.get(b.url + thumbnail, headers=admin).status_code == 404
    metadata = f"/dicom-web/studies/{sample.study}/metadata"
    assert httpx.get(b.url + metadata, headers=admin).status_code == 404


def _backup_material(a: Node, admin: dict[str, str]):  # type: ignore[no-untyped-def]
    """A study and a share of it that the restored archive must still serve."""
    sample = _store(a.url, admin, PatientID="NODES-KEPT")
    body = {"studies": [sample.study], "expires_at": _later(days=7), "permissions": ["view", "download"]}
    share = httpx.post(a.url + "/api/shares", json=body, headers=admin)
    assert share.status_code == 201, share.text
    return sample, share.json()
