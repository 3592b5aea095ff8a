"""Path parameters: UIDs validated before anything else sees them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from app.dicom.uids import UID_MAX_LENGTH, UID_PATTERN

StudyUID = Annotated[
    str, Path(pattern=UID_PATTERN, max_length=UID_MAX_LENGTH, description="Study Instance UID")
]
SeriesUID = Annotated[
    str, Path(pattern=UID_PATTERN, max_length=UID_MAX_LENGTH, description="Series Instance UID")
]
InstanceUID = Annotated[
    str, Path(pattern=UID_PATTERN, max_length=UID_MAX_LENGTH, description="SOP Instance UID")
]
