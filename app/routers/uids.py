"""Path parameters: UIDs validated before anything else sees them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

_UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"

StudyUID = Annotated[str, Path(pattern=_UID_PATTERN, max_length=64, description="Study Instance UID")]
SeriesUID = Annotated[str, Path(pattern=_UID_PATTERN, max_length=64, description="Series Instance UID")]
InstanceUID = Annotated[str, Path(pattern=_UID_PATTERN, max_length=64, description="SOP Instance UID")]
