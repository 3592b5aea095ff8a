"""The query/retrieve levels of PS3.18 §10.6 (QIDO-RS) and §10.4 (WADO-RS)."""

from __future__ import annotations

from enum import IntEnum


class Level(IntEnum):
    """Ordered from the top: a lower level's query may match attributes of the levels above
    it (relational queries, PS3.18 §10.6.1.2.1), never of those below."""

    STUDY = 1
    SERIES = 2
    INSTANCE = 3
