"""A 500 MiB multi-frame instance goes through STOW-RS and WADO-RS against a real uvicorn
process with flat memory: the server's peak RSS stays within 150 MiB of its idle RSS."""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.fixtures import LiveServer

pytestmark = pytest.mark.slow

ROWS = COLUMNS = 512
FRAMES = 1000  # 512 x 512 x 2 bytes x 1000 frames = 500 MiB of pixel data
MIB = 1 << 20
BOUNDARY = "large-instance-boundary-7f3a"


def _write_large_instance(path: Path) -> tuple[str, str, str]:
    """Write a Part 10 file with FRAMES frames, streaming the pixel data to disk."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "LARGE-1", "Large^Instance", "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, FRAMES
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.save_as(path, enforce_file_format=True)
    frame_bytes = ROWS * COLUMNS * 2
    with path.open("ab") as file:
        file.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frame_bytes * FRAMES))
        base = np.arange(ROWS * COLUMNS, dtype=np.uint16)
        for frame in range(FRAMES):
            file.write((base + frame).tobytes())
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def _multipart(path: Path) -> Iterator[bytes]:
    yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    with path.open("rb") as file:
        while chunk := file.read(MIB):
            yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _rss(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


class _PeakSampler(threading.Thread):
    """Samples the server's RSS while a transfer runs (VmHWM is checked as well)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _rss(self.pid))
            time.sleep(0.02)


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str, str], str]:
    path = tmp_path_factory.mktemp("large") / "large.dcm"
    uids = _write_large_instance(path)
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(8 * MIB):
            digest.update(chunk)
    return path, uids, digest.hexdigest()


@pytest.mark.parametrize("live_server", ["filesystem", "s3"], indirect=True)
def test_large_instance_streams_with_flat_memory(live_server: LiveServer, large_instance, capsys):
    path, (study, series, instance), expected_sha = large_instance
    assert path.stat().st_size > 500 * MIB
    with httpx.Client(base_url=live_server.dicomweb, timeout=300, headers=live_server.headers) as client:
        # Warm up, so that idle RSS includes the modules a request imports.
        assert client.get("/studies").status_code == 200
        idle = _rss(live_server.pid)
        Path(f"/proc/{live_server.pid}/clear_refs").write_text("5")  # reset VmHWM
        sampler = _PeakSampler(live_server.pid)
        sampler.start()
        try:
            started = time.monotonic()
            stored = client.post(
                "/studies",
                content=_multipart(path),
                headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'},
            )
            stow_seconds = time.monotonic() - started
            assert stored.status_code == 200, stored.text
            started = time.monotonic()
            retrieved_sha = _retrieve_sha(client, f"/studies/{study}/series/{series}/instances/{instance}")
            wado_seconds = time.monotonic() - started
        finally:
            sampler.running = False
            sampler.join()
        peak = max(sampler.peak, _rss(live_server.pid, "VmHWM"))

    assert retrieved_sha == expected_sha
    growth = peak - idle
    with capsys.disabled():
        print(
            f"\nlarge instance ({path.stat().st_size / MIB:.0f} MiB): STOW {stow_seconds:.1f} s, "
            f"WADO {wado_seconds:.1f} s, idle RSS {idle / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, "
            f"growth {growth / MIB:.0f} MiB"
        )
    assert growth < 150 * MIB


def _retrieve_sha(client: httpx.Client, url: str) -> str:
    """Stream a single-instance WADO-RS response and hash exactly the part's payload."""
    digest = hashlib.sha256()
    with client.stream(
        "GET", url, headers={"Accept": 'multipart/related; type="application/dicom"'}
    ) as response:
        assert response.status_code == 200
        boundary = response.headers["content-type"].split("boundary=")[1].encode()
        trailer = b"\r\n--" + boundary + b"--\r\n"
        pending, in_payload = b"", False
        for chunk in response.iter_bytes(MIB):
            pending += chunk
            if not in_payload:
                if b"\r\n\r\n" not in pending:
                    continue
                pending, in_payload = pending.split(b"\r\n\r\n", 1)[1], True
            # Hold back as many bytes as the closing delimiter, which is not payload.
            if len(pending) > len(trailer):
                digest.update(pending[: -len(trailer)])
                pending = pending[-len(trailer) :]
        assert pending == trailer
    return digest.hexdigest()
