"""Member hospitals in PostgreSQL."""

from __future__ import annotations

import pytest

from app.errors import BadRequest
from app.repository import hospitals
from app.repository.database import create_pool


@pytest.mark.parametrize("code", ["", "-LEADING", "WITH SPACE", "A" * 65])
async def test_a_code_the_table_refuses_is_a_bad_request(clean_db: str, code: str):
    # The driver's CheckViolationError stays inside the repository.
    pool = await create_pool(clean_db, min_size=1, max_size=2)
    try:
        with pytest.raises(BadRequest, match="hospital code"):
            await hospitals.add(pool, code, "A hospital")
        assert await hospitals.every(pool) == []
    finally:
        await pool.close()


async def test_a_taken_code_is_none(clean_db: str):
    pool = await create_pool(clean_db, min_size=1, max_size=2)
    try:
        added = await hospitals.add(pool, "NORTH", "North hospital")
        assert added is not None and added.code == "NORTH"
        assert await hospitals.add(pool, "NORTH", "Another") is None
    finally:
        await pool.close()
