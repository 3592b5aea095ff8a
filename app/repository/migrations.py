"""Apply ``app/migrations/NNNN_name.sql`` files in order, once each.

Each applied file is recorded with its SHA-256; a recorded file whose text has since
changed is refused, because the schema it describes no longer matches the database.
An advisory lock serialises concurrent runners (several workers starting at once).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

#: Package data of ``app`` (pyproject's package-data), so an installed wheel carries them;
#: a wheel is installed unpacked, so the resource is a real directory.
MIGRATIONS_DIR = Path(str(resources.files("app") / "migrations"))
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# An arbitrary constant naming the "migrations" advisory lock.
_LOCK_ID = 0x46494C4D

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
SELECT_APPLIED = "SELECT version, name, sha256 FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)"


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"unexpected migration file name {path.name!r}")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:04d}")
        found[version] = Migration(version, path.name, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    pending = load(directory)
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(CREATE_TABLE)
        applied = {r["version"]: r for r in await conn.fetch(SELECT_APPLIED)}
        for migration in pending:
            done = applied.get(migration.version)
            if done is not None:
                if done["sha256"] != migration.sha256:
                    raise MigrationError(f"{migration.name} was edited after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(INSERT_APPLIED, migration.version, migration.name, migration.sha256)
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now


async def unapplied(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> str | None:
    """Why the schema does not match this code's migrations, or None when it does: for
    readiness, since a node serving on a half-migrated or edited schema answers wrongly."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = {r["version"]: r for r in await conn.fetch(SELECT_APPLIED)} if exists else {}
    for migration in load(directory):
        done = applied.get(migration.version)
        if done is None:
            return f"migration {migration.name} is not applied"
        if done["sha256"] != migration.sha256:
            return f"migration {migration.name} was edited after it was applied"
    return None
