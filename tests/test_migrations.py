"""The migration runner: an empty database is migrated, a second run is a no-op, and an
edited migration is refused."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from app.repository.migrations import MIGRATIONS_DIR, MigrationError, load, migrate


@pytest_asyncio.fixture(loop_scope="session")
async def empty_db(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    name = "migrations_" + secrets.token_hex(4)
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f"CREATE DATABASE {name}")
    conn = await asyncpg.connect(postgres_url, database=name)
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()


async def test_migrates_an_empty_database_then_is_a_no_op(empty_db: asyncpg.Connection):
    names = [m.name for m in load()]
    assert names and names[0].startswith("0001_")
    assert await migrate(empty_db) == names
    tables = {
        r["tablename"]
        for r in await empty_db.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
    }
    assert {"patients", "studies", "series", "instances", "schema_migrations"} <= tables
    assert await migrate(empty_db) == []


async def test_an_edited_migration_is_refused(empty_db: asyncpg.Connection, tmp_path: Path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    await migrate(empty_db, copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="edited"):
        await migrate(empty_db, copy)


async def test_a_new_migration_is_applied_after_the_others(empty_db: asyncpg.Connection, tmp_path: Path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    await migrate(empty_db, copy)
    (copy / "9999_extra.sql").write_text("CREATE TABLE extra (id int);")
    assert await migrate(empty_db, copy) == ["9999_extra.sql"]
    assert await empty_db.fetchval("SELECT count(*) FROM extra") == 0


def test_badly_named_files_are_refused(tmp_path: Path):
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="name"):
        load(tmp_path)
