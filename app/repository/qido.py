"""QIDO-RS as SQL. Attribute tags reach SQL only through the column whitelists below;
every value travels as a ``$n`` parameter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.dicom.levels import Level
from app.dicom.names import fold
from app.dicom.query import Condition, Match, QidoQuery, is_patient_specific, time_key
from app.repository.database import Pool, connection
from app.security.scope import Scope

# DICOM tag -> column, for every indexed attribute. TM attributes match on their key column.
COLUMNS: dict[str, str] = {
    "00100010": "p.patient_name",
    "00100020": "p.patient_id",
    "00100021": "p.issuer_of_patient_id",
    "00100030": "p.patient_birth_date",
    "00100040": "p.patient_sex",
    "0020000D": "st.study_instance_uid",
    "00080020": "st.study_date",
    "00080030": "st.study_time",
    "00080050": "st.accession_number",
    "00080090": "st.referring_physician_name",
    "00081030": "st.study_description",
    "00200010": "st.study_id",
    "00080201": "st.timezone_offset",
    "00080061": "st.modalities",
    "00201206": "st.num_series",
    "00201208": "st.num_instances",
    "0020000E": "se.series_instance_uid",
    "00080060": "se.modality",
    "00200011": "se.series_number",
    "0008103E": "se.series_description",
    "00180015": "se.body_part_examined",
    "00400244": "se.pps_start_date",
    "00400245": "se.pps_start_time",
    "00201209": "se.num_instances",
    "00080018": "i.sop_instance_uid",
    "00080016": "i.sop_class_uid",
    "00200013": "i.instance_number",
    "00280010": "i.rows",
    "00280011": "i.columns",
    "00280100": "i.bits_allocated",
    "00280008": "i.number_of_frames",
}
MATCH_COLUMNS: dict[str, str] = {
    **COLUMNS,
    "00080030": "st.study_time_key",
    "00100010": "p.patient_name_fold",
    "00080090": "st.referring_physician_fold",
    "00400245": "se.pps_start_time_key",
    "00400009": "se.scheduled_step_ids",
    "00401001": "se.requested_procedure_ids",
}
ARRAY_TAGS = frozenset({"00080061", "00400009", "00401001"})

# The columns each level returns (PS3.18 Table 10.6.3-3), and the level they belong to.
_JOINED = {
    Level.STUDY: ("p.", "st."),
    Level.SERIES: ("p.", "st.", "se."),
    Level.INSTANCE: ("p.", "st.", "se.", "i."),
}


def columns_at(level: Level) -> frozenset[str]:
    """The tags whose columns a query at ``level`` can select (its tables are joined)."""
    return frozenset(t for t, c in COLUMNS.items() if c.startswith(_JOINED[level]))


_STUDY_TAGS = [t for t, c in COLUMNS.items() if c.startswith(("p.", "st."))]
_SERIES_TAGS = [t for t, c in COLUMNS.items() if c.startswith("se.")]
_INSTANCE_TAGS = [t for t, c in COLUMNS.items() if c.startswith("i.")]
TAGS_BY_LEVEL = {Level.STUDY: _STUDY_TAGS, Level.SERIES: _SERIES_TAGS, Level.INSTANCE: _INSTANCE_TAGS}

_OWNERS = " JOIN patients p ON p.pk = st.patient_pk JOIN hospitals h ON h.pk = st.hospital_pk"
_FROM = {
    Level.STUDY: "studies st" + _OWNERS,
    Level.SERIES: "series se JOIN studies st ON st.pk = se.study_pk" + _OWNERS,
    Level.INSTANCE: "instances i JOIN series se ON se.pk = i.series_pk JOIN studies st ON st.pk = se.study_pk"
    + _OWNERS,
}
# Who owns each match: for the audit trail and to tag regional results.
_OWNER_COLUMNS = ["h.code AS hospital", "h.name AS hospital_name", "p.patient_id AS patient"]
# Only what is completely stored is visible (PS3.18: InstanceAvailability ONLINE).
_VISIBLE = {
    Level.STUDY: "st.num_instances > 0",
    Level.SERIES: "se.num_instances > 0",
    Level.INSTANCE: "i.status = 1",
}
# Stable orders, so that consecutive pages neither overlap nor skip (PS3.18 §8.3.4.4).
_ORDER = {Level.STUDY: "st.pk", Level.SERIES: "se.pk", Level.INSTANCE: "se.pk, i.instance_number, i.pk"}
# Attributes not indexed come from the stored DICOM JSON of one instance in scope.
_REPRESENTATIVE = {
    Level.STUDY: "(SELECT i2.metadata FROM series se2 JOIN instances i2 ON i2.series_pk = se2.pk "
    "WHERE se2.study_pk = st.pk AND i2.status = 1 ORDER BY i2.pk LIMIT 1)",
    Level.SERIES: "(SELECT i2.metadata FROM instances i2 WHERE i2.series_pk = se.pk AND i2.status = 1 "
    "ORDER BY i2.pk LIMIT 1)",
    Level.INSTANCE: "i.metadata",
}
_SCOPE_COLUMNS = {"0020000D": "st.study_instance_uid", "0020000E": "se.series_instance_uid"}


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def build(query: QidoQuery, tags: list[str], extra: list[str] | None, scope: Scope) -> tuple[str, list[Any]]:
    """SQL and parameters for ``query``, returning the ``tags`` columns (aliased by tag) and,
    when ``extra`` is given, the stored JSON of those other tags (``None``: all of them)."""
    params = _Params()
    where = [_VISIBLE[query.level]]
    hospital, studies = scope.filters(cross_hospital=is_patient_specific(query))
    if hospital is not None:
        where.append(f"st.hospital_pk = {params.add(hospital)}")
    if studies is not None:
        where.append(f"st.study_instance_uid = ANY({params.add(studies)}::text[])")
    for tag, uid in query.scope.items():
        where.append(f"{_SCOPE_COLUMNS[tag]} = {params.add(uid)}")
    where.extend(_condition(c, query.fuzzy, params) for c in query.conditions)
    select = [f'{COLUMNS[t]} AS "{t}"' for t in tags] + _OWNER_COLUMNS
    if extra is not None or query.include_all:
        rep = _REPRESENTATIVE[query.level]
        if extra and not query.include_all:
            select.append(
                f"(SELECT jsonb_object_agg(k, v) FROM jsonb_each({rep}) AS e(k, v) "
                f"WHERE k = ANY({params.add(extra)}::text[]))::text AS extra"
            )
        else:
            select.append(f"{rep}::text AS extra")
    # One row more than the page: its presence tells that results were cut (a Warning).
    limit, offset = params.add(query.limit + 1), params.add(query.offset)
    sql = (
        f"SELECT {', '.join(select)} FROM {_FROM[query.level]} WHERE {' AND '.join(where)} "
        f"ORDER BY {_ORDER[query.level]} LIMIT {limit} OFFSET {offset}"
    )
    return sql, params.values


def _condition(cond: Condition, fuzzy: bool, params: _Params) -> str:
    attr = cond.attribute
    column = MATCH_COLUMNS[attr.tag]
    if attr.tag in ARRAY_TAGS:
        return _array_condition(column, cond, params)
    if cond.match is Match.LIST:
        return f"{column} = ANY({params.add(list(cond.values))}::text[])"
    if cond.match is Match.RANGE or attr.vr == "TM":
        return _range(column, cond, params)
    value = cond.values[0]
    if attr.vr == "PN":
        # Person names match on their folded form: case- and accent-insensitive, which
        # PS3.4 C.2.2.2.1 permits for PN.
        value = fold(value)
        if fuzzy:
            # Fuzzy matching (PS3.18 §8.3.4.1): any name component starting with the value.
            return f"{column} ~ {params.add(_fuzzy_regex(value))}"
    if cond.match is Match.WILDCARD:
        return f"{column} LIKE {params.add(_like(value))}"
    if attr.vr == "IS":
        return f"{column} = {params.add(int(value))}"
    return f"{column} = {params.add(value)}"


def _array_condition(column: str, cond: Condition, params: _Params) -> str:
    if cond.match is Match.WILDCARD:
        return (
            f"EXISTS (SELECT 1 FROM unnest({column}) AS v WHERE v LIKE {params.add(_like(cond.values[0]))})"
        )
    return f"{column} && {params.add(list(cond.values))}::text[]"


def _range(column: str, cond: Condition, params: _Params) -> str:
    is_time = cond.attribute.vr == "TM"
    low, high = cond.values if cond.match is Match.RANGE else (cond.values[0], cond.values[0])
    parts = []
    if low:
        parts.append(f"{column} >= {params.add(time_key(low) if is_time else low)}")
    if high:
        parts.append(f"{column} <= {params.add(time_key(high, upper=True) if is_time else high)}")
    return " AND ".join(parts)


def _like(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern (PS3.4 C.2.2.2.4).

    >>> _like("O'Bri*_1?%")
    "O'Bri%\\\\_1_\\\\%"
    """
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _fuzzy_regex(value: str) -> str:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value.strip())
    return rf"(^|[\^= ]){body}"


@dataclass(frozen=True)
class Found:
    """One match of a search: the asked-for attributes' values by tag, and whose it is."""

    values: dict[str, Any]
    patient: str
    hospital: str
    hospital_name: str
    #: The stored JSON of the attributes the level's tables do not hold, when asked for.
    extra: str | None


async def search(
    pool: Pool, scope: Scope, query: QidoQuery, tags: list[str], extra: list[str] | None
) -> list[Found]:
    sql, values = build(query, tags, extra, scope)
    async with connection(pool) as conn:
        rows = await conn.fetch(sql, *values)
    return [
        Found(
            {tag: row[tag] for tag in tags},
            row["patient"],
            row["hospital"],
            row["hospital_name"],
            row["extra"] if "extra" in row.keys() else None,
        )
        for row in rows
    ]
