"""Which attributes belong to the study and series levels, for ``includefield=all``
(PS3.18 §8.3.4.3): the Patient, General Study, Patient Study, General Series, General
Equipment, Frame of Reference and related modules of PS3.3 (C.7.1 to C.7.5)."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from app.dicom.levels import Level

_STUDY_KEYWORDS = """
StudyInstanceUID StudyDate StudyTime ReferringPhysicianName ReferringPhysicianIdentificationSequence
StudyID AccessionNumber IssuerOfAccessionNumberSequence StudyDescription PhysiciansOfRecord
PhysiciansOfRecordIdentificationSequence NameOfPhysiciansReadingStudy ReferencedStudySequence
ProcedureCodeSequence RequestingService ReasonForPerformedProcedureCodeSequence
AdmittingDiagnosesDescription AdmittingDiagnosesCodeSequence PatientAge PatientSize PatientWeight
PatientSizeCodeSequence MedicalAlerts Allergies Occupation AdditionalPatientHistory AdmissionID
IssuerOfAdmissionIDSequence ServiceEpisodeID ServiceEpisodeDescription PregnancyStatus
TimezoneOffsetFromUTC SpecificCharacterSet
""".split()

_SERIES_KEYWORDS = """
Modality SeriesInstanceUID SeriesNumber Laterality SeriesDate SeriesTime PerformingPhysicianName
PerformingPhysicianIdentificationSequence ProtocolName SeriesDescription SeriesDescriptionCodeSequence
OperatorsName OperatorIdentificationSequence ReferencedPerformedProcedureStepSequence
RelatedSeriesSequence BodyPartExamined PatientPosition SmallestPixelValueInSeries
LargestPixelValueInSeries RequestAttributesSequence PerformedProcedureStepID
PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedProcedureStepEndDate
PerformedProcedureStepEndTime PerformedProcedureStepDescription PerformedProtocolCodeSequence
CommentsOnThePerformedProcedureStep AnatomicalOrientationType FrameOfReferenceUID
PositionReferenceIndicator Manufacturer InstitutionName InstitutionAddress StationName
InstitutionalDepartmentName ManufacturerModelName DeviceSerialNumber SoftwareVersions
SpatialResolution DateOfLastCalibration TimeOfLastCalibration PixelPaddingValue
TimezoneOffsetFromUTC SpecificCharacterSet
""".split()


def _tags(keywords: list[str]) -> frozenset[str]:
    found = (tag_for_keyword(k) for k in keywords)
    return frozenset(f"{t:08X}" for t in found if t is not None)


_STUDY_TAGS = _tags(_STUDY_KEYWORDS)
_SERIES_TAGS = _tags(_SERIES_KEYWORDS)


def belongs_to(level: Level, tag: str) -> bool:
    """True if ``tag`` (``"00100010"``) is an attribute of ``level``'s entity: patient
    attributes (group 0010) and study attributes at study level, series attributes at
    series level, anything at instance level.

    >>> belongs_to(Level.STUDY, "00100010"), belongs_to(Level.STUDY, "00080060")
    (True, False)
    >>> belongs_to(Level.SERIES, "00080070"), belongs_to(Level.SERIES, "00200013")
    (True, False)
    """
    if level is Level.INSTANCE:
        return True
    if level is Level.STUDY:
        return tag.startswith("0010") or tag in _STUDY_TAGS
    return tag in _SERIES_TAGS
