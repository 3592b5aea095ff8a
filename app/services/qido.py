"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from app.dicom.attributes import BY_TAG, vr_of
from app.dicom.elements import JsonDataset, element
from app.dicom.levels import Level
from app.dicom.modules import belongs_to
from app.dicom.query import QidoQuery, parse_query
from app.repository import qido as repository
from app.repository.qido import TAGS_BY_LEVEL, Found, columns_at
from app.security.scope import Scope
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail

#: Private attributes naming the owning hospital (PS3.5 §7.8.1: block 10 of group 0009).
OWNER_CREATOR = "FILMLESS"
OWNER_CREATOR_TAG, OWNER_CODE_TAG, OWNER_NAME_TAG = "00090010", "00091010", "00091011"

#: PS3.18 §8.3.4.4: the warning sent when a response holds fewer matches than exist.
TRUNCATED_WARNING = (
    '299 filmless "The number of results exceeded the maximum supported by the server. '
    'Additional results can be requested."'
)


@dataclass(frozen=True)
class SearchResult:
    matches: list[JsonDataset]
    #: A ``Warning`` header value when results were cut short.
    warning: str | None
    #: Whose data each match is: (Study Instance UID, PatientID, hospital code).
    owners: list[tuple[str, str, str]]


async def search(
    archive: Archive,
    access: Scope,
    level: Level,
    params: Iterable[tuple[str, str]],
    root: str,
    path_uids: dict[str, str] | None = None,
) -> SearchResult:
    """Search within ``access`` (the caller's scope). ``path_uids`` are the UIDs the
    resource path fixes (``/studies/{s}/series``)."""
    settings = archive.settings
    query = parse_query(
        level,
        params,
        default_limit=settings.qido_default_limit,
        max_limit=settings.qido_max_limit,
        scope=path_uids,
    )
    tags = _returned_tags(query)
    # Asked-for attributes the level's tables do not hold come from the stored instance.
    extra = sorted(t for t in query.include if t not in tags)
    rows = await repository.search(archive.pool, access, query, tags, extra if extra else None)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    matches = [_dataset(query, row, tags, root) for row in rows]
    owners = [(m["0020000D"]["Value"][0], r.patient, r.hospital) for m, r in zip(matches, rows, strict=True)]
    return SearchResult(matches, TRUNCATED_WARNING if more or query.limit_clamped else None, owners)


async def search_recorded(
    archive: Archive,
    trail: Trail,
    level: Level,
    params: Iterable[tuple[str, str]],
    root: str,
    path_uids: dict[str, str] | None = None,
) -> SearchResult:
    """A QIDO-RS search for the trail's caller, its matches recorded in the trail."""
    result = await search(archive, trail.scope, level, params, root, path_uids)
    trail.note(
        studies=(o[0] for o in result.owners),
        patients=(o[1] for o in result.owners),
        owners=(o[2] for o in result.owners),
        count=len(result.matches),
    )
    await audit.commit(archive, trail, 200)
    return result


@dataclass(frozen=True)
class StudyView:
    """A study's QIDO-RS attributes and its series', for a page about it."""

    study: JsonDataset
    series: list[JsonDataset]


async def find_study(
    archive: Archive, trail: Trail, study: str, root: str, patient: Iterable[tuple[str, str]] = ()
) -> StudyView | None:
    """The study ``study`` and its series as the trail's caller may see them, recorded;
    None, recorded as a 404, when they see no such study. ``patient``: matching keys
    naming its patient, with which a regional caller's query may cross member hospitals
    (:func:`app.dicom.query.is_patient_specific`)."""
    keys = list(patient)
    found = await search(archive, trail.scope, Level.STUDY, [("StudyInstanceUID", study), *keys], root)
    if not found.matches:
        await audit.commit(archive, trail, 404, "no such study")
        return None
    series = await search(archive, trail.scope, Level.SERIES, keys, root, {"0020000D": study})
    owners = found.owners
    trail.note(studies=[study], patients=[o[1] for o in owners], owners=[o[2] for o in owners], count=1)
    await audit.commit(archive, trail, 200)
    return StudyView(found.matches[0], series.matches)


def _returned_tags(query: QidoQuery) -> list[str]:
    """The level's default attributes (PS3.18 Table 10.6.3-3), those of the levels above
    when the resource path does not fix them, and the indexed ones asked for."""
    fixed = {Level.STUDY: "0020000D" in query.scope, Level.SERIES: "0020000E" in query.scope}
    levels = [lvl for lvl in Level if lvl == query.level or (lvl < query.level and not fixed[lvl])]
    tags = [t for lvl in levels for t in TAGS_BY_LEVEL[lvl]]
    # The UIDs of the enclosing levels are always returned: clients build URLs from them.
    for uid_tag in ("0020000D", "0020000E"):
        if BY_TAG[uid_tag].level < query.level and uid_tag not in tags:
            tags.append(uid_tag)
    available = columns_at(query.level)
    tags.extend(t for t in sorted(query.include) if t in available and t not in tags)
    return tags


def _dataset(query: QidoQuery, row: Found, tags: list[str], root: str) -> JsonDataset:
    dataset: JsonDataset = {}
    if row.extra:
        stored = _without_bulk(json.loads(row.extra))
        if query.include_all:
            # "all" means the attributes of the level's entity (PS3.18 §8.3.4.3), plus any
            # named explicitly.
            stored = {t: v for t, v in stored.items() if belongs_to(query.level, t) or t in query.include}
        dataset.update(stored)
    for tag in tags:
        dataset[tag] = element(vr_of(tag), row.values[tag])
    # Everything the archive returns is stored and retrievable now (PS3.18 Table 10.6.3-3).
    dataset["00080056"] = element("CS", "ONLINE")
    # The member hospital that owns the data, in the archive's private block (documented
    # in the README's conformance notes): regional results mix hospitals.
    dataset[OWNER_CREATOR_TAG] = element("LO", OWNER_CREATOR)
    dataset[OWNER_CODE_TAG] = element("LO", row.hospital)
    dataset[OWNER_NAME_TAG] = element("LO", row.hospital_name)
    dataset["00081190"] = element("UR", _retrieve_url(query.level, dataset, root))
    return dict(sorted(dataset.items()))


def _retrieve_url(level: Level, dataset: JsonDataset, root: str) -> str:
    study = dataset["0020000D"]["Value"][0]
    url = f"{root}/studies/{study}"
    if level >= Level.SERIES:
        url += f"/series/{dataset['0020000E']['Value'][0]}"
    if level is Level.INSTANCE:
        url += f"/instances/{dataset['00080018']['Value'][0]}"
    return url


def _without_bulk(stored: JsonDataset) -> JsonDataset:
    # QIDO-RS returns no bulk data (PS3.18 §10.6.3.3): drop values held as BulkDataURI.
    return {tag: attr for tag, attr in stored.items() if "BulkDataURI" not in attr and tag != "7FE00010"}


def encode(matches: list[JsonDataset]) -> bytes:
    return json.dumps(matches, separators=(",", ":"), ensure_ascii=False).encode()
