"""QIDO-RS (PS3.18 §10.6): search for studies, series and instances."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.dicom.attributes import BY_TAG, vr_of
from app.dicom.elements import JsonDataset, element
from app.dicom.levels import Level
from app.dicom.modules import belongs_to
from app.dicom.query import QidoQuery, parse_query
from app.repository import qido as repository
from app.repository.qido import COLUMNS, TAGS_BY_LEVEL
from app.state import Archive

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


async def search(
    archive: Archive,
    level: Level,
    params: Iterable[tuple[str, str]],
    root: str,
    scope: dict[str, str] | None = None,
) -> SearchResult:
    settings = archive.settings
    query = parse_query(
        level,
        params,
        default_limit=settings.qido_default_limit,
        max_limit=settings.qido_max_limit,
        scope=scope,
    )
    tags = _returned_tags(query)
    extra = sorted(t for t in query.include if t not in COLUMNS)
    rows = await repository.search(archive.pool, query, tags, extra if extra else None)
    more = len(rows) > query.limit
    matches = [_dataset(query, row, tags, root) for row in rows[: query.limit]]
    return SearchResult(matches, TRUNCATED_WARNING if more or query.limit_clamped else None)


def _returned_tags(query: QidoQuery) -> list[str]:
    """The level's default attributes (PS3.18 Table 10.6.3-3), those of the levels above
    when the resource path does not fix them, and the indexed ones asked for."""
    levels = [query.level]
    if query.level >= Level.SERIES and "0020000E" not in query.scope:
        levels.insert(0, Level.SERIES)
        if "0020000D" not in query.scope:
            levels.insert(0, Level.STUDY)
    tags = [t for lvl in levels for t in TAGS_BY_LEVEL[lvl]]
    # The UIDs of the enclosing levels are always returned: clients build URLs from them.
    for uid_tag in ("0020000D", "0020000E"):
        if BY_TAG[uid_tag].level < query.level and uid_tag not in tags:
            tags.append(uid_tag)
    tags.extend(t for t in sorted(query.include) if t in COLUMNS and t not in tags)
    return tags


def _dataset(query: QidoQuery, row: asyncpg.Record, tags: list[str], root: str) -> JsonDataset:
    dataset: JsonDataset = {}
    if "extra" in row.keys() and row["extra"]:
        stored = _without_bulk(json.loads(row["extra"]))
        if query.include_all:
            # "all" means the attributes of the level's entity (PS3.18 §8.3.4.3), plus any
            # named explicitly.
            stored = {t: v for t, v in stored.items() if belongs_to(query.level, t) or t in query.include}
        dataset.update(stored)
    for tag in tags:
        value: Any = row[tag]
        dataset[tag] = element(vr_of(tag), value)
    # Everything the archive returns is stored and retrievable now (PS3.18 Table 10.6.3-3).
    dataset["00080056"] = element("CS", "ONLINE")
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
