"""Import media built in the test from the bundled samples: a DICOM File-set with its
DICOMDIR (pydicom's FileSet), a ZIP of it and an ISO 9660 image of it (pycdlib)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import pydicom
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from tests.samples import Sample, make_sample

#: Samples of one foreign study: native, encapsulated (JPEG 2000, RLE), big endian, RGB.
SHAPES = ("ct", "mr", "jpeg2000", "rle", "rgb")


@dataclass(frozen=True)
class Medium:
    root: Path
    samples: list[Sample]

    @property
    def files(self) -> list[Path]:
        """The instance files, DICOMDIR excluded."""
        return sorted(p for p in self.root.rglob("*") if p.is_file() and p.name != "DICOMDIR")


def write_fileset(root: Path, shapes: tuple[str, ...] = SHAPES, **attributes: object) -> Medium:
    """A File-set of one study under ``root``, written with a DICOMDIR by pydicom."""
    study = generate_uid()
    samples = [make_sample(shape, study=study, PatientID="FOREIGN-1", **attributes) for shape in shapes]
    fileset = FileSet()
    for sample in samples:
        fileset.add(pydicom.dcmread(io.BytesIO(sample.data)))
    fileset.write(root)
    # The staging directory pydicom keeps, removed now rather than by its finalizer (which
    # warns, and warnings are errors here).
    fileset._stage["t"].cleanup()
    return Medium(root, samples)


def zip_of(medium: Medium, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(medium.root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(medium.root).as_posix())
    return target


def iso_of(medium: Medium, target: Path) -> Path:
    """An ISO 9660 level 1 image, as PS3.12 CD-R media are: the DICOM File IDs are valid
    level 1 names already."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident="FILMLESS")
    for path in sorted(medium.root.rglob("*")):
        iso_path = "/" + path.relative_to(medium.root).as_posix()
        if path.is_dir():
            iso.add_directory(iso_path)
        else:
            iso.add_file(str(path), iso_path + ".;1")
    iso.write(str(target))
    iso.close()
    return target
