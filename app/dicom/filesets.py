"""DICOM File-sets on media (PS3.10 §8, PS3.3 F.3): which files of a CD, a ZIP or a folder
are the instances to import.

A File-set's DICOMDIR lists its files in directory records, each naming a file by its
Referenced File ID (0004,1500), path components relative to the DICOMDIR. A medium is
read by following those records, not by guessing which files are DICOM. Where there is no
DICOMDIR (a folder or ZIP a user made), every file is offered to the store pipeline,
which refuses what is not an instance. Pure: names in, names out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

#: The DICOMDIR's file name (PS3.10 §8.6: "DICOMDIR", in the root of the File-set).
DICOMDIR = "DICOMDIR"


def normalized(name: str) -> str:
    """A member's name for matching: ``/``-separated, no ISO 9660 version (``;1``) or empty
    extension dot, upper case (PS3.12 media use ISO 9660 level 1 names, and File IDs are
    upper case, PS3.10 §8.2; a copy on another file system may have lowered them).

    >>> normalized("DIR1/FILE1.;1"), normalized("./dicomdir"), normalized("A\\\\B")
    ('DIR1/FILE1', 'DICOMDIR', 'A/B')
    """
    name = name.replace("\\", "/")
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        base, semicolon, version = part.rpartition(";")
        if semicolon and version.isdigit():
            part = base
        parts.append(part.rstrip(".").upper())
    return "/".join(parts)


@dataclass(frozen=True)
class Reference:
    """A file a DICOMDIR record points to: its path relative to the DICOMDIR and, when
    the record says, the SOP Instance UID it holds (0004,1511)."""

    file_id: str
    sop_instance_uid: str | None


def references(dicomdir: Dataset) -> list[Reference]:
    """The files the DICOMDIR's directory records reference (PS3.3 F.3.2.2), in record
    order, each once."""
    found: dict[str, Reference] = {}
    for record in dicomdir.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        components = [file_id] if isinstance(file_id, str) else list(file_id)
        path = normalized("/".join(str(c) for c in components))
        uid = record.get("ReferencedSOPInstanceUIDInFile")
        found.setdefault(path, Reference(path, str(uid) if uid else None))
    return list(found.values())


@dataclass(frozen=True)
class Plan:
    """What to import from a medium: members by their actual names."""

    #: Members to store, in order.
    members: list[str]
    #: Files DICOMDIR records reference that the medium does not hold (normalized names).
    missing: list[str]
    #: DICOMDIRs followed (actual names).
    dicomdirs: list[str]


def plan(names: Iterable[str], read_dicomdir: Callable[[str], Dataset | None]) -> Plan:
    """Choose the members to import. A DICOMDIR governs its directory and everything
    below: there, only the files its records reference are taken. Elsewhere, every file.
    ``read_dicomdir`` reads a DICOMDIR member, or None when it cannot be read (then its
    directory is taken file by file, like one without)."""
    actual = {normalized(n): n for n in names}
    governed: list[str] = []  # normalized directories a DICOMDIR governs
    members: list[str] = []
    missing: list[str] = []
    dicomdirs: list[str] = []
    candidates = sorted((n for n in actual if posixpath.basename(n) == DICOMDIR), key=lambda n: n.count("/"))
    for name in candidates:
        directory = posixpath.dirname(name)
        if any(_within(directory, g) for g in governed):
            continue
        dataset = read_dicomdir(actual[name])
        if dataset is None:
            continue
        governed.append(directory)
        dicomdirs.append(actual[name])
        for ref in references(dataset):
            path = posixpath.join(directory, ref.file_id) if directory else ref.file_id
            if path in actual:
                members.append(actual[path])
            else:
                missing.append(path)
    for name, original in actual.items():
        # A governed directory's own DICOMDIR is within it too: it is not an instance.
        if not any(_within(posixpath.dirname(name), g) for g in governed):
            members.append(original)
    return Plan(members, missing, dicomdirs)


def _within(directory: str, root: str) -> bool:
    return root == "" or directory == root or directory.startswith(root + "/")
