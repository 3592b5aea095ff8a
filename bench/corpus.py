"""The benchmark's corpus: studies of small CT instances with realistic variety, and one
large multi-frame instance, all reproducible from a seed.

The small instances are copies of pydicom's bundled ``CT_small.dcm`` (39 KiB, native
Explicit VR Little Endian) re-identified with UIDs drawn from the seeded RNG, so two runs
with the same seed store byte-identical objects. The large instance is synthesized with
numpy and written to disk frame by frame: it never exists in memory as a whole.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

MIB = 1 << 20

#: Every corpus patient's ID starts with this, so a peer can be cleared of a previous run's
#: corpus (and of nothing else) before loading.
PATIENT_ID_PREFIX = "BENCH-"

FAMILY_NAMES = (
    "Adams", "Baker", "Bernard", "Brown", "Clark", "Dubois", "Garcia", "Green", "Hall",
    "Harris", "Jackson", "Johnson", "Jones", "Lambert", "Lee", "Lewis", "Martin", "Martinez",
    "Miller", "Moore", "Muller", "Nguyen", "Petit", "Robert", "Rossi", "Schmidt", "Smith",
    "Taylor", "Thomas", "Walker", "White", "Wilson",
)  # fmt: skip
GIVEN_NAMES = (
    "Alice", "Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jack",
    "Julia", "Leo", "Lucas", "Marie", "Noah", "Olivia", "Paul", "Rose", "Sam", "Sofia", "Tom",
)  # fmt: skip
#: Modalities weighted by repetition, roughly as a general hospital's archive fills up.
MODALITIES = ("CT", "CT", "CT", "MR", "MR", "CR", "CR", "DX", "US", "PT")
#: What a study of each modality looks at: (study description, body part).
EXAMS = {
    "CT": ("CT CHEST WITHOUT CONTRAST", "CHEST"),
    "MR": ("MR BRAIN WITH AND WITHOUT CONTRAST", "HEAD"),
    "CR": ("CR CHEST 2 VIEWS", "CHEST"),
    "DX": ("DX KNEE 3 VIEWS", "KNEE"),
    "US": ("US ABDOMEN COMPLETE", "ABDOMEN"),
    "PT": ("PET/CT WHOLE BODY", "WHOLEBODY"),
}
#: Studies fall on days of these two years: QIDO date ranges pick months and years in it.
FIRST_DAY, DAYS = date(2023, 1, 1), 731
#: Studies per patient on average: some patients come back.
STUDIES_PER_PATIENT = 1.5


@dataclass(frozen=True)
class Series:
    uid: str
    modality: str
    number: int
    instances: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    uid: str
    patient_id: str
    patient_name: str
    accession_number: str
    date: str
    series: tuple[Series, ...]

    @property
    def modalities(self) -> list[str]:
        return list(dict.fromkeys(series.modality for series in self.series))


@dataclass(frozen=True)
class Patient:
    patient_id: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class LargeInstance:
    """A multi-frame instance on disk. Each STOW of it gets a new SOP Instance UID: a fresh
    header (:meth:`header_for`) followed by the Pixel Data element streamed from disk
    (:meth:`pixel_chunks`)."""

    path: Path
    study: str
    series: str
    frames: int
    frame_bytes: int
    pixel_offset: int
    header: Dataset

    @property
    def pixel_bytes(self) -> int:
        """The length of the Pixel Data element, its tag and length included."""
        return self.path.stat().st_size - self.pixel_offset

    def header_for(self, sop_uid: str) -> bytes:
        """The Part 10 preamble, file meta and attributes before Pixel Data."""
        ds = self.header
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()

    def pixel_chunks(self, chunk: int = MIB) -> Iterator[bytes]:
        with self.path.open("rb") as file:
            file.seek(self.pixel_offset)
            while data := file.read(chunk):
                yield data


def uid_source(rng: random.Random) -> Iterator[str]:
    """UIDs of the ``2.25`` form (a 128-bit integer, PS3.5 §B.2) from the seeded RNG."""
    while True:
        yield f"2.25.{rng.getrandbits(128)}"


def plan_studies(
    count: int,
    series_per_study: int,
    instances_per_series: int,
    rng: random.Random,
    patient_prefix: str = PATIENT_ID_PREFIX,
) -> tuple[list[Patient], list[Study]]:
    """The corpus's patients and studies: who, when, which modality, and every UID. Patient
    IDs start with ``patient_prefix``, itself starting with :data:`PATIENT_ID_PREFIX`."""
    uids = uid_source(rng)
    count_patients = max(1, round(count / STUDIES_PER_PATIENT))
    patients = [_patient(index, rng, patient_prefix) for index in range(count_patients)]
    accessions = rng.sample(range(10**7, 10**8), count)
    studies = []
    for index in range(count):
        # Every patient gets a study before any gets a second one.
        patient = patients[index] if index < len(patients) else rng.choice(patients)
        modality = rng.choice(MODALITIES)
        series = tuple(
            Series(
                uid=next(uids),
                modality=_series_modality(modality, number),
                number=number,
                instances=tuple(next(uids) for _ in range(instances_per_series)),
            )
            for number in range(1, series_per_study + 1)
        )
        day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
        studies.append(
            Study(
                uid=next(uids),
                patient_id=patient.patient_id,
                patient_name=patient.name,
                accession_number=f"A{accessions[index]}",
                date=day.strftime("%Y%m%d"),
                series=series,
            )
        )
    return patients, studies


def _patient(index: int, rng: random.Random, prefix: str) -> Patient:
    birth = date(1940, 1, 1) + timedelta(days=rng.randrange(60 * 365))
    return Patient(
        patient_id=f"{prefix}{index:06d}",
        name=f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=rng.choice("FM"),
    )


def _series_modality(study_modality: str, number: int) -> str:
    # A PET study carries a CT series for attenuation correction: ModalitiesInStudy then
    # holds two values, as it does in real archives.
    return "CT" if study_modality == "PT" and number == 2 else study_modality


class InstanceWriter:
    """Part 10 bytes of the corpus's small instances, from one template dataset that is
    re-identified in place (a deep copy per instance would double the time)."""

    def __init__(self, patients: list[Patient]) -> None:
        path = get_testdata_file("CT_small.dcm")
        if path is None:
            raise RuntimeError("pydicom's bundled CT_small.dcm is missing")
        self._template = pydicom.dcmread(str(path))
        self._patients = {patient.patient_id: patient for patient in patients}

    def series(self, study: Study, series: Series) -> list[bytes]:
        ds = self._template
        patient = self._patients[study.patient_id]
        description, body_part = EXAMS[series.modality]
        ds.PatientID, ds.PatientName = patient.patient_id, patient.name
        ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study.uid, study.date, "083000"
        ds.AccessionNumber, ds.StudyDescription = study.accession_number, EXAMS[study.modalities[0]][0]
        ds.StudyID = study.accession_number[-6:]
        ds.ReferringPhysicianName = "Referring^Doctor"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series.uid, series.number, series.modality
        ds.SeriesDescription, ds.BodyPartExamined = description, body_part
        ds.FrameOfReferenceUID = series.uid + ".1"
        out = []
        for number, sop_uid in enumerate(series.instances, start=1):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
            ds.InstanceNumber = number
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            out.append(buffer.getvalue())
        return out


def write_large_instance(
    path: Path, frames: int, rows: int, columns: int, uids: Iterator[str]
) -> LargeInstance:
    """A Multi-frame Grayscale Word SC instance (16-bit, native Explicit VR Little Endian)
    of ``frames`` frames, its pixel data written to disk one frame at a time."""
    ds = _large_header(frames, rows, columns, uids)
    ds.save_as(path, enforce_file_format=True)
    pixel_offset = path.stat().st_size
    frame_bytes = rows * columns * 2
    with path.open("ab") as file:
        # The Pixel Data element header (PS3.5 §7.1.2: OW has a 32-bit length), then frames
        # that differ from each other, so no layer can serve one frame for another.
        file.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frame_bytes * frames))
        base = np.arange(rows * columns, dtype=np.uint16)
        for frame in range(frames):
            file.write((base + frame).tobytes())
    return LargeInstance(
        path=path,
        study=ds.StudyInstanceUID,
        series=ds.SeriesInstanceUID,
        frames=frames,
        frame_bytes=frame_bytes,
        pixel_offset=pixel_offset,
        header=ds,
    )


def _large_header(frames: int, rows: int, columns: int, uids: Iterator[str]) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7.3")  # Multi-frame Grayscale Word SC
    meta.MediaStorageSOPInstanceUID = UID(next(uids))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = next(uids), next(uids)
    ds.PatientID, ds.PatientName = f"{PATIENT_ID_PREFIX}LARGE", "Large^Multiframe"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240615", "120000", "LARGE0001"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OT", 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


#: CT Image Storage (PS3.4 Annex B).
CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
#: The viewer study's window (center, width in HU): soft tissue.
CT_WINDOW = (40, 400)


@dataclass(frozen=True)
class ViewerStudy:
    """What a viewer opens: a series of 512 x 512 16-bit CT slices (native), and a series of
    the same slices compressed as JPEG 2000 (lossless), in one study."""

    study: str
    ct_series: str
    ct_instances: tuple[str, ...]
    j2k_series: str
    j2k_instances: tuple[str, ...]

    @property
    def instances(self) -> int:
        return len(self.ct_instances) + len(self.j2k_instances)


def plan_viewer_study(ct_count: int, j2k_count: int, uids: Iterator[str]) -> ViewerStudy:
    return ViewerStudy(
        study=next(uids),
        ct_series=next(uids),
        ct_instances=tuple(next(uids) for _ in range(ct_count)),
        j2k_series=next(uids),
        j2k_instances=tuple(next(uids) for _ in range(j2k_count)),
    )


def ct_slice(index: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic axial CT slice in stored values (HU + 1024, 12 bits used): air around
    a body of soft tissue with a fat rim, two lungs that change size along the scan, a
    vertebra, and quantum noise, so that windowing and compression see real content."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    hu = np.full((side, side), -1000.0, dtype=np.float32)
    body = (x / 0.44) ** 2 + (y / 0.34) ** 2
    hu[body < 1] = -100.0  # fat
    hu[body < 0.85] = 40.0  # soft tissue
    lung = 0.12 + 0.03 * np.sin(index / 6)
    for side_x in (-0.17, 0.17):
        hu[((x - side_x) / (lung * 0.8)) ** 2 + ((y + 0.02) / lung) ** 2 < 1] = -850.0
    hu[(x**2 + (y - 0.22) ** 2) < 0.045**2] = 700.0  # vertebra
    hu += rng.normal(0, 12, size=hu.shape).astype(np.float32)
    return np.clip(hu + 1024, 0, 4095).astype(np.uint16)


def viewer_instances(viewer: ViewerStudy, side: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Part 10 bytes of the viewer study's two series: native CT slices and JPEG 2000
    ones (encoded with pydicom's pylibjpeg-openjpeg encoder)."""
    from pydicom.uid import JPEG2000Lossless

    rng = np.random.default_rng(seed)
    native, j2k = [], []
    for number, sop_uid in enumerate(viewer.ct_instances, start=1):
        pixels = ct_slice(number, side, rng)
        native.append(_ct_bytes(_ct_header(viewer, side), viewer.ct_series, 1, sop_uid, number, pixels))
        if number <= len(viewer.j2k_instances):
            j2k_uid = viewer.j2k_instances[number - 1]
            ds = _ct_header(viewer, side)
            j2k.append(_ct_bytes(ds, viewer.j2k_series, 2, j2k_uid, number, pixels, JPEG2000Lossless))
    return native, j2k


def _ct_header(viewer: ViewerStudy, side: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyInstanceUID = viewer.study
    ds.PatientID, ds.PatientName = f"{PATIENT_ID_PREFIX}VIEWER", "Viewer^Chest"
    ds.PatientBirthDate, ds.PatientSex = "19600101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240616", "090000", "VIEWER0001"
    ds.StudyDescription, ds.StudyID = "CT CHEST WITHOUT CONTRAST", "VIEW01"
    ds.ReferringPhysicianName = "Referring^Doctor"
    ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CT", "CHEST", "Synthetic"
    ds.FrameOfReferenceUID = viewer.study + ".1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP, ds.SliceThickness = 120, 2.5
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = CT_WINDOW
    return ds


def _ct_bytes(
    ds: Dataset,
    series_uid: str,
    series_number: int,
    sop_uid: str,
    number: int,
    pixels: np.ndarray,
    syntax: UID | None = None,
) -> bytes:
    ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, series_number
    ds.SeriesDescription = "AXIAL 2.5 MM" + (" J2K" if syntax else "")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [-179.2, -179.2, -2.5 * number]
    ds.SliceLocation = -2.5 * number
    ds.PixelData = pixels.tobytes()
    if syntax is not None:
        # The SOP Instance UID is planned: pydicom would otherwise draw a new one.
        ds.compress(syntax, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
