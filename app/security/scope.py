"""What a caller may see: the scope every repository query carries, so isolation between
member hospitals is enforced where the data is read, never by filtering results after."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    #: The caller's own hospital: its data is always in scope.
    hospital_pk: int | None
    #: Regional look-up: other members' data too, for patient-specific queries and for
    #: retrieval by UID (each such access is audited).
    regional: bool = False
    #: Only these studies, whoever owns them (share links); overrides the rest.
    study_uids: frozenset[str] | None = None
    #: A de-identifying share's key: what it is shown is de-identified with it (PS3.15
    #: Annex E; see app.dicom.deidentification).
    deidentify_key: bytes | None = None

    def filters(self, cross_hospital: bool) -> tuple[int | None, list[str] | None]:
        """``(hospital_pk, study_uids)`` to filter on; None means no filter on that column.
        ``cross_hospital`` says whether the request is one a regional caller may run
        across members. A scope that grants nothing filters on an impossible hospital."""
        if self.study_uids is not None:
            return None, sorted(self.study_uids)
        if self.regional and cross_hospital:
            return None, None
        return (self.hospital_pk if self.hospital_pk is not None else -1), None
