"""The known DICOM AEs under /api/aes (admin)."""

from __future__ import annotations

import httpx

from tests.fixtures import HOSPITAL, ArchiveUnderTest


async def test_add_list_remove(served: ArchiveUnderTest, client: httpx.AsyncClient):
    body = {"ae_title": "CT1", "host": "127.0.0.1", "port": 104, "hospital": HOSPITAL, "may_store": True}
    added = await client.post("/api/aes", json=body)
    assert added.status_code == 201, added.text
    assert added.json()["may_store"] and not added.json()["may_find"] and added.json()["may_echo"]
    assert (await client.post("/api/aes", json=body)).status_code == 409
    assert (
        await client.post("/api/aes", json={**body, "ae_title": "X", "hospital": "NOWHERE"})
    ).status_code == 400
    assert (await client.post("/api/aes", json={**body, "ae_title": "BACK\\SLASH"})).status_code == 400
    assert [a["ae_title"] for a in (await client.get("/api/aes")).json()] == ["CT1"]
    assert (await client.delete("/api/aes/CT1")).status_code == 204
    assert (await client.delete("/api/aes/CT1")).status_code == 404
    assert (await client.get("/api/aes")).json() == []


async def test_only_admins(served: ArchiveUnderTest):
    async with served.as_user(roles=["reader", "uploader"]) as reader:
        assert (await reader.get("/api/aes")).status_code == 403
        body = {"ae_title": "CT1", "host": "127.0.0.1", "port": 104, "hospital": HOSPITAL}
        assert (await reader.post("/api/aes", json=body)).status_code == 403
