"""Who is calling, and what they may do. Every route depends on :func:`authorize`, so
authentication arrives in this one place.

Until authentication is configured the archive is open: every caller is the anonymous
principal with every right.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from fastapi import Request

from app.errors import Forbidden


class Right(Enum):
    READ = "read"  # QIDO-RS, WADO-RS, WADO-URI
    STORE = "store"  # STOW-RS
    DELETE = "delete"  # removing studies, series, instances


@dataclass(frozen=True)
class Principal:
    subject: str
    rights: frozenset[Right]


ANONYMOUS = Principal(subject="anonymous", rights=frozenset(Right))


def requires(right: Right) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency factory: the caller, once it is established they hold ``right``."""

    async def authorize(request: Request) -> Principal:
        del request  # the open archive does not look at the request yet
        principal = ANONYMOUS
        if right not in principal.rights:
            raise Forbidden(f"{principal.subject} may not {right.value}")
        return principal

    return authorize
