"""FastAPI dependencies: the archive's state, and the caller for each kind of access."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.access import Principal, Right, requires
from app.state import Archive


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def dicomweb_root(request: Request) -> str:
    """The absolute URL of the DICOMweb root, for RetrieveURL and BulkDataURI values."""
    archive = get_archive(request)
    base = archive.settings.base_url or str(request.base_url)
    return base.rstrip("/") + "/dicom-web"


ArchiveDep = Annotated[Archive, Depends(get_archive)]
RootDep = Annotated[str, Depends(dicomweb_root)]
Reader = Annotated[Principal, Depends(requires(Right.READ))]
Uploader = Annotated[Principal, Depends(requires(Right.STORE))]
Deleter = Annotated[Principal, Depends(requires(Right.DELETE))]
