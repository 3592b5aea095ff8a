"""Known application entities in PostgreSQL."""

from __future__ import annotations

import pytest

from app.errors import BadRequest
from app.repository import aes, hospitals
from app.repository.aes import NewApplicationEntity
from app.repository.database import create_pool


async def test_add_find_list_remove(clean_db: str):
    pool = await create_pool(clean_db, min_size=1, max_size=2)
    try:
        await hospitals.add(pool, "NORTH", "North hospital")
        added = await aes.add(pool, NewApplicationEntity("CT1", "127.0.0.1", 104, "NORTH", may_store=True))
        assert added is not None and added.hospital == "NORTH" and added.may_store and not added.may_find
        assert await aes.add(pool, NewApplicationEntity("CT1", "127.0.0.1", 105, "NORTH")) is None
        assert await aes.add(pool, NewApplicationEntity("MR1", "127.0.0.1", 104, "NOWHERE")) is None
        assert (await aes.by_title(pool, "CT1 ")) == added
        assert [ae.ae_title for ae in await aes.every(pool)] == ["CT1"]
        assert await aes.every(pool, added.hospital_pk + 1) == []
        assert await aes.remove(pool, "CT1") and not await aes.remove(pool, "CT1")
        assert await aes.by_title(pool, "CT1") is None
    finally:
        await pool.close()


@pytest.mark.parametrize("title", ["", "A" * 17, "BACK\\SLASH", " LEADING", "TAB\tX"])
async def test_invalid_titles_are_refused(clean_db: str, title: str):
    pool = await create_pool(clean_db, min_size=1, max_size=2)
    try:
        await hospitals.add(pool, "NORTH", "North hospital")
        with pytest.raises(BadRequest):
            await aes.add(pool, NewApplicationEntity(title, "127.0.0.1", 104, "NORTH"))
    finally:
        await pool.close()
