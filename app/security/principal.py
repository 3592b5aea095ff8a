"""Who is calling, and what they may do: roles grant rights, and the caller's hospital and
roles give the scope every repository query carries (:class:`app.security.scope.Scope`).

The HTTP side (the bearer token, the dependency every route declares) is
:mod:`app.http.auth`; this module knows nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from app.security.scope import Scope


class Role(Enum):
    READER = "reader"  # QIDO-RS, WADO-RS, WADO-URI of their hospital's studies
    UPLOADER = "uploader"  # STOW-RS
    SHARER = "sharer"  # create and revoke share links
    ADMIN = "admin"  # delete, audit queries, hospital management
    REGIONAL = "regional"  # reads other members' studies of a specific patient


class Right(Enum):
    READ = "read"  # search, metadata, frames, rendered images
    DOWNLOAD = "download"  # whole instances (WADO-RS retrieve, WADO-URI DICOM, ZIP)
    STORE = "store"
    SHARE = "share"
    DELETE = "delete"
    AUDIT = "audit"
    ADMINISTER = "administer"


ROLE_RIGHTS: dict[Role, frozenset[Right]] = {
    Role.READER: frozenset({Right.READ, Right.DOWNLOAD}),
    Role.UPLOADER: frozenset({Right.STORE}),
    Role.SHARER: frozenset({Right.SHARE}),
    Role.ADMIN: frozenset({Right.DELETE, Right.AUDIT, Right.ADMINISTER}),
    # Regional look-up widens what READ reaches; it grants no right of its own.
    Role.REGIONAL: frozenset(),
}


@dataclass(frozen=True)
class Principal:
    subject: str
    hospital: str | None
    hospital_pk: int | None
    roles: frozenset[Role]
    share_id: str | None = None
    shared_studies: frozenset[str] | None = None
    #: A share's rights, from its permissions; staff rights come from their roles.
    share_rights: frozenset[Right] | None = None
    #: A de-identifying share's key (see app.dicom.deidentification).
    deidentify_key: bytes | None = None

    @property
    def rights(self) -> frozenset[Right]:
        if self.share_rights is not None:
            return self.share_rights
        return frozenset().union(*(ROLE_RIGHTS[r] for r in self.roles))

    @property
    def scope(self) -> Scope:
        return Scope(
            hospital_pk=self.hospital_pk,
            regional=Role.REGIONAL in self.roles and Right.READ in self.rights,
            study_uids=self.shared_studies,
            deidentify_key=self.deidentify_key,
        )
