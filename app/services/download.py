"""A study download as a streamed ZIP: the DICOM files as stored, and a DICOMDIR (PS3.10
file-set, built with pydicom's FileSet from the stored headers) so that a recipient can
import it into a PACS or burn it to a disc. Nothing is buffered but one chunk: each file
is copied from the object store into the ZIP as it is sent."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pydicom.uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet

from app.dicom.deidentification import deidentify, fill_for_directory, remap_uid
from app.errors import ObjectNotFound
from app.repository import retrieve
from app.repository.retrieve import Exported
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.bodies import drain
from app.services.deidentified import deidentified
from app.storage.base import BlobStore

log = logging.getLogger(__name__)

#: Archives larger than this need ZIP64 entries; decided per file from its known size.
_ZIP32_LIMIT = 0xFFFFFFFF


class _Sink(io.RawIOBase):
    """Where zipfile writes: collected, and handed out chunk by chunk (not seekable, so
    zipfile writes data descriptors, as a stream needs)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


async def zip_stream(
    store: BlobStore, instances: list[Exported], deidentify_key: bytes | None = None
) -> AsyncIterator[bytes]:
    """The ZIP; with ``deidentify_key``, of de-identified copies (PS3.15 Annex E), their
    DICOMDIR built from the de-identified headers."""
    dicomdir, paths = await asyncio.to_thread(_dicomdir, instances, deidentify_key)
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive_zip:
        archive_zip.writestr("DICOMDIR", dicomdir)
        yield sink.take()
        for instance, path in zip(instances, paths, strict=True):
            try:
                reader = await store.open(instance.object_key)
            except ObjectNotFound:
                log.info("an instance was deleted while its study was downloaded")
                continue
            info = zipfile.ZipInfo(path, date_time=(2000, 1, 1, 0, 0, 0))
            chunks = drain(reader)
            if deidentify_key is not None:
                chunks = deidentified(chunks, deidentify_key, instance.transfer_syntax_uid)
            # A de-identified header may be a little longer than the stored one.
            zip64 = instance.size > _ZIP32_LIMIT - (1 << 20 if deidentify_key else 0)
            with archive_zip.open(info, "w", force_zip64=zip64) as entry:
                async for chunk in chunks:
                    entry.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


async def study_zip(
    archive: Archive, trail: Trail, studies: list[str], deidentify_key: bytes | None = None
) -> AsyncIterator[bytes]:
    """The ZIP of ``studies`` (checked against the caller's scope before), recorded as the
    download before the first byte, which the stream yields only when read: a share's
    recipient's download and a signed-in patient's are this one path."""
    instances = await retrieve.export(archive.pool, studies)
    trail.note(
        studies={i.study_instance_uid for i in instances}, patients={i.patient_id for i in instances},
        owners={i.hospital for i in instances}, count=len(instances), size=sum(i.size for i in instances),
    )  # fmt: skip
    await audit.commit(archive, trail, 200, "ZIP download")
    return zip_stream(archive.store, instances, deidentify_key)


def _dicomdir(instances: list[Exported], deidentify_key: bytes | None) -> tuple[bytes, list[str]]:
    """The DICOMDIR of ``instances`` and the path (File ID) of each in the file-set."""
    file_set = FileSet()
    for instance in instances:
        header = _header(instance)
        if deidentify_key is not None:
            deidentify(header, deidentify_key)
            fill_for_directory(header)
        file_set.add(header)
    try:
        with tempfile.TemporaryDirectory() as directory:
            file_set.write(directory)
            dicomdir = (Path(directory) / "DICOMDIR").read_bytes()
        by_uid = {str(record.SOPInstanceUID): "/".join(Path(record.FileID).parts) for record in file_set}
    finally:
        # pydicom's FileSet stages files in a directory it removes only when garbage
        # collected; remove it now.
        stage = getattr(file_set, "_stage", {}).get("t")
        if stage is not None:
            stage.cleanup()
    if deidentify_key is not None:
        return dicomdir, [by_uid[remap_uid(deidentify_key, i.sop_instance_uid)] for i in instances]
    return dicomdir, [by_uid[i.sop_instance_uid] for i in instances]


def _header(instance: Exported) -> Dataset:
    # The stored header suffices for the directory records; bulk values are not needed.
    ds = Dataset.from_json(json.loads(instance.metadata), lambda uri: b"")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(instance.sop_class_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(instance.sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(instance.transfer_syntax_uid)
    if "PixelData" in ds:
        del ds.PixelData
    return ds
