"""A million instances in the index, written in bulk straight into PostgreSQL, to time
QIDO-RS at scale without storing a million objects.

Rows are built by ``INSERT ... SELECT`` over ``generate_series``, in the shape the archive
itself writes: every instance stored (``status = 1``) with a unique object key, the
counters (``num_series``, ``num_instances``) and ``studies.modalities`` consistent with
the rows below them. Primary keys are given explicitly (past the existing rows) so
parents are known without a join; the identity sequences are moved past them afterwards.
No objects exist behind these rows, so only QIDO is measured on them.

The schema keeps growing, so the seed does not list every column. The database must hold
one instance stored through the archive first (a *template*): each column the seed does
not know (ownership, offsets, bookkeeping...) is copied from the template's rows, so the
seeded rows belong to whoever the template belongs to and are visible to the same
requests. Columns the archive derives from others at ingest are listed in ``DERIVED``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from app.dicom.query import time_key
from bench.corpus import (
    DAYS,
    FAMILY_NAMES,
    FIRST_DAY,
    GIVEN_NAMES,
    MODALITIES,
    STUDIES_PER_PATIENT,
    Series,
    Study,
)

#: pydicom's UID root, under which UIDs that need not be random may be made up.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
STUDY_TIME = "083000"
#: Instance rows per INSERT: each batch is its own transaction, so the WAL and the
#: indexes are fed in steps rather than in one giant statement.
BATCH = 100_000

#: Columns added by later migrations and filled at ingest from other columns, with the
#: SQL that derives them from the seed's own columns (``v.``): copying them from the
#: template would be wrong. The names are ASCII, so lower() is the archive's fold().
DERIVED: dict[str, dict[str, str]] = {
    "patients": {"patient_name_fold": "lower(v.patient_name)"},
    "studies": {"referring_physician_fold": "lower(v.referring_physician_name)"},
}


@dataclass(frozen=True)
class Rows:
    """One level's seed: ``INSERT INTO table`` of ``(column, SQL expression)`` pairs
    computed over ``source`` (a ``generate_series`` named ``g``)."""

    table: str
    columns: tuple[tuple[str, str], ...]
    source: str
    #: Columns holding primary keys, and the table they are keys of: shifted past the
    #: rows already there (the template's).
    keys: tuple[tuple[str, str], ...]


def _modality(study: str) -> str:
    """The modality of study number ``study`` ($1: the weighted modalities)."""
    return f"($1::text[])[1 + (({study}) * 7) % cardinality($1::text[])]"


# $1 family names, $2 given names, $3 patients.
PATIENTS = Rows(
    "patients",
    (
        ("pk", "g"),
        ("patient_id", "'SEED-' || lpad(g::text, 8, '0')"),
        (
            "patient_name",
            "($1::text[])[1 + (g * 7) % cardinality($1::text[])] || '^' "
            "|| ($2::text[])[1 + (g * 11) % cardinality($2::text[])]",
        ),
        ("patient_birth_date", "to_char(date '1940-01-01' + (g * 37) % 21900, 'YYYYMMDD')"),
        ("patient_sex", "CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END"),
    ),
    "generate_series(1, $3::int) AS g",
    (("pk", "patients"),),
)

# $1 modalities, $2 first day, $3 days, $4 instances per study, $5 series per study,
# $6 patients, $7 studies. A PET study has a CT series, as in the corpus.
STUDIES = Rows(
    "studies",
    (
        ("pk", "g"),
        ("patient_pk", "1 + (g - 1) % $6::int"),
        ("study_instance_uid", f"'{UID_ROOT}1.' || g"),
        ("study_date", "to_char($2::date + (g * 7919) % $3::int, 'YYYYMMDD')"),
        ("study_time", f"'{STUDY_TIME}'"),
        ("study_time_key", f"'{time_key(STUDY_TIME)}'"),
        ("accession_number", "'S' || lpad(g::text, 9, '0')"),
        ("referring_physician_name", "'Referring^Doctor'"),
        ("study_description", "m || ' EXAM'"),
        ("study_id", "g::text"),
        ("num_series", "$5::int"),
        ("num_instances", "$4::int"),
        ("modalities", "CASE WHEN m = 'PT' THEN ARRAY['PT', 'CT'] ELSE ARRAY[m] END"),
    ),
    f"generate_series(1, $7::int) AS g, LATERAL (SELECT {_modality('g')} AS m) AS x",
    (("pk", "studies"), ("patient_pk", "patients")),
)

# $1 modalities, $2 instances per series, $3 series per study, $4 series.
SERIES = Rows(
    "series",
    (
        ("pk", "g"),
        ("study_pk", "1 + (g - 1) / $3::int"),
        ("series_instance_uid", f"'{UID_ROOT}2.' || g"),
        ("modality", "CASE WHEN m = 'PT' AND (g - 1) % $3::int = 1 THEN 'CT' ELSE m END"),
        ("series_number", "1 + (g - 1) % $3::int"),
        ("series_description", "'SERIES ' || (1 + (g - 1) % $3::int)"),
        ("num_instances", "$2::int"),
    ),
    f"generate_series(1, $4::int) AS g, LATERAL (SELECT {_modality('1 + (g - 1) / $3::int')} AS m) AS x",
    (("pk", "series"), ("study_pk", "studies")),
)

# $1 first and $2 last instance of the batch, $3 instances per series.
INSTANCES = Rows(
    "instances",
    (
        ("pk", "g"),
        ("series_pk", "1 + (g - 1) / $3::int"),
        ("sop_instance_uid", f"'{UID_ROOT}3.' || g"),
        ("sop_class_uid", "'1.2.840.10008.5.1.4.1.1.2'"),
        ("instance_number", "1 + (g - 1) % $3::int"),
        ("transfer_syntax_uid", "'1.2.840.10008.1.2.1'"),
        ("rows", "128"),
        ("columns", "128"),
        ("bits_allocated", "16"),
        ("samples_per_pixel", "1"),
        ("status", "1"),
        ("object_key", "'bench/' || g"),
        ("size", "39206"),
        ("sha256", "sha256(int8send(g))"),
        ("metadata", "'{}'::jsonb"),
    ),
    "generate_series($1::bigint, $2::bigint) AS g",
    (("pk", "instances"), ("series_pk", "series")),
)

SAMPLE = """
SELECT st.study_instance_uid, st.accession_number, st.study_date, p.patient_id, p.patient_name,
       array_agg(se.series_instance_uid ORDER BY se.pk) AS series_uids,
       array_agg(se.modality ORDER BY se.pk) AS series_modalities
FROM studies st JOIN patients p ON p.pk = st.patient_pk JOIN series se ON se.study_pk = st.pk
WHERE st.study_instance_uid = ANY($1::text[])
GROUP BY st.pk, p.pk
ORDER BY st.pk"""

TABLES = ("patients", "studies", "series", "instances")


class SeedError(RuntimeError):
    """The database cannot be seeded as it is."""


@dataclass(frozen=True)
class Layout:
    """How many rows of each level a seed of ``instances`` instances writes."""

    instances: int
    series_per_study: int
    instances_per_series: int

    @property
    def studies(self) -> int:
        return math.ceil(self.instances / (self.series_per_study * self.instances_per_series))

    @property
    def series(self) -> int:
        return self.studies * self.series_per_study

    @property
    def patients(self) -> int:
        return max(1, round(self.studies / STUDIES_PER_PATIENT))

    @property
    def total_instances(self) -> int:
        """The instances written: whole studies, so at least ``instances``."""
        return self.series * self.instances_per_series


async def seed_index(url: str, layout: Layout, progress: Callable[[str], None]) -> float:
    """Fill the database at ``url``, which holds a template instance (see the module's
    docstring); returns the seconds it took."""
    began = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        seed = _Seed(conn, await _columns(conn), await _template(conn))
        per_study = layout.series_per_study * layout.instances_per_series
        await seed.insert(PATIENTS, list(FAMILY_NAMES), list(GIVEN_NAMES), layout.patients)
        await seed.insert(
            STUDIES, list(MODALITIES), FIRST_DAY, DAYS, per_study,
            layout.series_per_study, layout.patients, layout.studies,
        )  # fmt: skip
        await seed.insert(
            SERIES, list(MODALITIES), layout.instances_per_series, layout.series_per_study, layout.series
        )
        progress(f"{layout.patients:,} patients, {layout.studies:,} studies, {layout.series:,} series")
        for first in range(1, layout.total_instances + 1, BATCH):
            last = min(first + BATCH - 1, layout.total_instances)
            await seed.insert(INSTANCES, first, last, layout.instances_per_series)
            rate = last / (time.perf_counter() - began)
            progress(f"{last:,} / {layout.total_instances:,} instances ({rate:,.0f} rows/s)")
        for table in TABLES:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), max(pk)) FROM {table}"
            )
        # As autovacuum would have left a live archive: statistics for the planner, and
        # the visibility map that lets index-only scans skip the heap.
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
    finally:
        await conn.close()
    return time.perf_counter() - began


async def _columns(conn: asyncpg.Connection) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY($1::text[]) ORDER BY ordinal_position",
        list(TABLES),
    )
    columns: dict[str, list[str]] = {table: [] for table in TABLES}
    for row in rows:
        columns[row["table_name"]].append(row["column_name"])
    return columns


async def _template(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """Per table, the template row's pk and the largest pk (seeded keys go past it)."""
    template = {}
    for table in TABLES:
        row = await conn.fetchrow(f"SELECT min(pk) AS first, max(pk) AS last FROM {table}")
        if row["first"] is None:
            raise SeedError(f"no template row in {table}: store one instance through the archive first")
        template[table] = (row["first"], row["last"])
    return template


@dataclass(frozen=True)
class _Seed:
    conn: asyncpg.Connection
    columns: dict[str, list[str]]
    template: dict[str, tuple[int, int]]

    async def insert(self, rows: Rows, *args: object) -> None:
        """``INSERT ... SELECT`` the seed's columns (keys shifted past the existing rows),
        the derived ones, and every other column copied from the template row."""
        table, present = rows.table, self.columns[rows.table]
        seeded = [name for name, _ in rows.columns]
        derived = {name: sql for name, sql in DERIVED.get(table, {}).items() if name in present}
        copied = [name for name in present if name not in seeded and name not in derived]
        shift = {column: self.template[keys_of][1] for column, keys_of in rows.keys}
        inner = ", ".join(f"{expression} AS {name}" for name, expression in rows.columns)
        outer = [f"v.{name} + {shift[name]}" if name in shift else f"v.{name}" for name in seeded]
        outer += [*derived.values(), *(f"t.{name}" for name in copied)]
        sql = (
            f"INSERT INTO {table} ({', '.join([*seeded, *derived, *copied])}) OVERRIDING SYSTEM VALUE "
            f"SELECT {', '.join(outer)} FROM (SELECT {inner} FROM {rows.source}) AS v, "
            f"(SELECT * FROM {table} WHERE pk = {self.template[table][0]}) AS t"
        )
        await self.conn.execute(sql, *args)


async def sample_studies(url: str, layout: Layout, count: int, rng: random.Random) -> list[Study]:
    """``count`` seeded studies picked at random, as the read workload's catalog."""
    numbers = rng.sample(range(1, layout.studies + 1), min(count, layout.studies))
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(SAMPLE, [f"{UID_ROOT}1.{number}" for number in numbers])
    finally:
        await conn.close()
    return [
        Study(
            uid=row["study_instance_uid"],
            patient_id=row["patient_id"],
            patient_name=row["patient_name"],
            accession_number=row["accession_number"],
            date=row["study_date"],
            series=tuple(
                Series(uid=uid, modality=modality, number=number, instances=())
                for number, (uid, modality) in enumerate(
                    zip(row["series_uids"], row["series_modalities"], strict=True), start=1
                )
            ),
        )
        for row in rows
    ]
