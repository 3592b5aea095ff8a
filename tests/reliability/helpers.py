"""What the fault tests check after a fault: every acknowledged instance retrievable as
sent, and the index and the store agreeing (no row without its object, no object without
its row), read from PostgreSQL and the store's files directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx

from tests.samples import Sample, split_multipart

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def retrieved(client: httpx.Client, sample: Sample) -> bytes:
    url = f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
    response = client.get(url, headers={"Accept": AS_STORED})
    assert response.status_code == 200, (response.status_code, response.text[:200])
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part[1]


def index_rows(database_url: str) -> tuple[dict[str, int], int]:
    """Stored instances' object keys (to their status), and how many rows are pending."""

    async def read() -> tuple[dict[str, int], int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT object_key, status FROM instances")
            garbage = await conn.fetchval("SELECT count(*) FROM object_garbage")
        finally:
            await conn.close()
        assert garbage == 0, f"{garbage} objects of deleted instances not collected"
        return {r["object_key"]: r["status"] for r in rows}, sum(r["status"] == 0 for r in rows)

    return asyncio.run(read())


def stored_files(root: Path) -> set[str]:
    """The filesystem store's objects by key (its temporaries apart)."""
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.relative_to(root).parts[0].startswith(".")
    }


def leftovers(root: Path, spool: Path) -> list[Path]:
    """Temporary objects and spool files: what a killed process leaves before the sweep."""
    found = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0].startswith(".")]
    return found + [p for p in spool.rglob("*") if p.is_file()]
