"""Regional look-up from the console: one patient's studies at every member hospital,
for a reader with the regional role. Only a query that names one patient unambiguously
(PatientID with IssuerOfPatientID, or an exact PatientName with PatientBirthDate) crosses
hospitals — the QIDO-RS engine's own rule (:func:`app.dicom.query.is_patient_specific`);
anything else is refused here rather than silently answered from one hospital."""

from __future__ import annotations

from app.dicom.levels import Level
from app.dicom.query import is_patient_specific as _specific
from app.dicom.query import parse_query
from app.errors import BadRequest, Forbidden
from app.security.principal import Role
from app.services import audit, qido
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.qido import SearchResult

#: The keys that name a patient, by label: one pair or the other.
PATIENT_KEYS = {
    "PatientID": "Patient ID",
    "IssuerOfPatientID": "Issuer of the patient ID (the authority that assigned it)",
    "PatientName": "Exact patient name (Family^Given)",
    "PatientBirthDate": "Birth date (YYYYMMDD)",
}
ONE_PATIENT = (
    "A regional look-up names one patient: the patient ID with its issuer, or the exact name "
    "with the birth date."
)


def names_one_patient(archive: Archive, params: list[tuple[str, str]]) -> bool:
    s = archive.settings
    query = parse_query(Level.STUDY, params, default_limit=s.qido_default_limit, max_limit=s.qido_max_limit)
    return _specific(query)


async def look_up(archive: Archive, trail: Trail, params: list[tuple[str, str]]) -> SearchResult:
    """The studies of the patient ``params`` name, at every member hospital; recorded,
    refusals too."""
    principal = trail.principal
    async with audit.refusals(archive, trail):
        if principal is None or Role.REGIONAL not in principal.roles or not principal.scope.regional:
            raise Forbidden("regional look-up needs the regional role")
        if not names_one_patient(archive, params):
            raise BadRequest(ONE_PATIENT)
    return await qido.search_recorded(archive, trail, Level.STUDY, params, "/dicom-web")
