"""What an import reads from: a folder, a ZIP file or an ISO 9660 image of a CD.

Each is a :class:`Volume`: member names (``/``-separated, relative), their sizes, and a
way to get one member onto disk as a file the store pipeline can read. Members are
copied out one at a time, streamed in chunks, to a file whose name the archive chose
(never one built from a member's name, which could climb out of the directory). All
methods block: call them off the event loop, from one thread at a time.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO, Protocol

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from app.storage.base import CHUNK_SIZE


class VolumeError(Exception):
    """A volume or one of its members cannot be read (corrupt, truncated, too large)."""


class Volume(Protocol):
    #: The name the report shows for this volume (the path it was given).
    label: str

    def names(self) -> list[str]: ...

    def size(self, name: str) -> int: ...

    def local_path(self, name: str) -> Path | None:
        """The member's own file when it is one on this machine (then it is read in
        place); None when it must be copied out."""
        ...

    def copy_out(self, name: str, target: Path, limit: int) -> None:
        """Write the member to ``target``; :class:`VolumeError` if it cannot be read or
        is larger than ``limit`` bytes."""
        ...

    def close(self) -> None: ...


def open_volume(path: Path) -> Volume:
    """The volume at ``path``: a directory, a ZIP file or an ISO 9660 image (by content,
    not by extension)."""
    if path.is_dir():
        return Folder(path)
    if zipfile.is_zipfile(path):
        return ZipVolume(path)
    if _is_iso9660(path):
        return IsoVolume(path)
    raise VolumeError(f"{path} is not a folder, a ZIP file or an ISO 9660 image")


def _is_iso9660(path: Path) -> bool:
    # ECMA-119 §8.4: the first volume descriptor is at sector 16 (2048-byte sectors), and
    # carries the standard identifier "CD001" after its type byte.
    try:
        with path.open("rb") as file:
            file.seek(16 * 2048 + 1)
            return file.read(5) == b"CD001"
    except OSError:
        return False


class Folder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)
        self._sizes: dict[str, int] = {}
        for directory, subdirectories, files in os.walk(root):
            subdirectories.sort()
            for file in sorted(files):
                full = Path(directory, file)
                if full.is_file() and not full.is_symlink():
                    self._sizes[full.relative_to(root).as_posix()] = full.stat().st_size

    def names(self) -> list[str]:
        return list(self._sizes)

    def size(self, name: str) -> int:
        return self._sizes[name]

    def local_path(self, name: str) -> Path | None:
        return self.root / name

    def copy_out(self, name: str, target: Path, limit: int) -> None:
        with (self.root / name).open("rb") as source:
            _copy(source, target, limit)

    def close(self) -> None:
        pass


class ZipVolume:
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise VolumeError(f"{path}: not a readable ZIP file ({exc})") from exc
        self._infos = {i.filename: i for i in self._zip.infolist() if not i.is_dir()}

    def names(self) -> list[str]:
        return list(self._infos)

    def size(self, name: str) -> int:
        return self._infos[name].file_size

    def local_path(self, name: str) -> Path | None:
        return None

    def copy_out(self, name: str, target: Path, limit: int) -> None:
        info = self._infos[name]
        if info.file_size > limit:
            raise VolumeError("member larger than the archive accepts")
        try:
            # The declared size is checked above and the copy bounded too: a member may
            # inflate to more than it declares.
            with self._zip.open(info) as source:
                _copy(source, target, limit)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            raise VolumeError(f"member cannot be read: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._zip.close()


class IsoVolume:
    """An ISO 9660 image. PS3.12 media carry ISO 9660 level 1 names, which are the DICOM
    File IDs; Joliet or Rock Ridge names, when present, are not needed."""

    def __init__(self, path: Path) -> None:
        self.label = str(path)
        self._iso = pycdlib.PyCdlib()
        try:
            self._iso.open(str(path))
            self._paths: dict[str, tuple[str, int]] = {}
            for directory, _, files in self._iso.walk(iso_path="/"):
                for file in sorted(files):
                    iso_path = directory.rstrip("/") + "/" + file
                    size = self._iso.get_record(iso_path=iso_path).get_data_length()
                    self._paths[_plain(iso_path)] = (iso_path, size)
        except (PyCdlibException, OSError) as exc:
            raise VolumeError(f"{path}: not a readable ISO 9660 image ({exc})") from exc

    def names(self) -> list[str]:
        return list(self._paths)

    def size(self, name: str) -> int:
        return self._paths[name][1]

    def local_path(self, name: str) -> Path | None:
        return None

    def copy_out(self, name: str, target: Path, limit: int) -> None:
        iso_path, size = self._paths[name]
        if size > limit:
            raise VolumeError("member larger than the archive accepts")
        try:
            # pycdlib copies the extent to the file object in blocks: the member is never
            # held in memory whole.
            with target.open("wb") as out:
                self._iso.get_file_from_iso_fp(out, iso_path=iso_path)
        except (PyCdlibException, OSError) as exc:
            raise VolumeError(f"member cannot be read: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._iso.close()


def _plain(iso_path: str) -> str:
    """An ISO 9660 path as people read it: no version number (``;1``) and no dot before an
    empty extension (ECMA-119 §7.5.1), as the DICOM File ID names it.

    >>> _plain("/DIR1/IM000000.;1"), _plain("/NOTES.TXT;1")
    ('DIR1/IM000000', 'NOTES.TXT')
    """
    parts = []
    for part in iso_path.strip("/").split("/"):
        base, semicolon, version = part.rpartition(";")
        parts.append((base if semicolon and version.isdigit() else part).rstrip("."))
    return "/".join(parts)


def _copy(source: IO[bytes], target: Path, limit: int) -> None:
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK_SIZE):
            written += len(chunk)
            if written > limit:
                raise VolumeError("member larger than the archive accepts")
            out.write(chunk)


__all__ = ["Folder", "IsoVolume", "Volume", "VolumeError", "ZipVolume", "open_volume"]
