"""DIMSE C-STORE figure: the corpus's own kind of instances sent to a target's DICOM port by
dcmtk's ``storescu``, several associations at once, as a modality or a PACS forwarding a
study would (PS3.4 Annex B).

``storescu`` rather than a Python SCU: the client then costs little CPU, which on a small
machine would otherwise be taken from the server it measures. Each round sends a fresh
set of instances (new UIDs: nothing is a duplicate) split over the associations, one
``storescu`` process per association; a sample is the round's instances over its wall
time, association set-up and release included.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import InstanceWriter, plan_studies
from bench.measure import Measurement

#: The benchmark's calling AE title: Filmless knows it (``filmless ae add``), Orthanc
#: accepts any caller.
CALLING_AE = "BENCHSCU"
#: A round's associations may take this long before the figure is given up.
ROUND_TIMEOUT = 600.0


@dataclass(frozen=True)
class DicomPeer:
    """A target's DICOM listener."""

    host: str
    port: int
    ae_title: str


@dataclass(frozen=True)
class DimseCorpus:
    """Part 10 files on disk, one list per round (the first round is a warm-up)."""

    rounds: tuple[tuple[Path, ...], ...]

    @property
    def instances(self) -> int:
        return sum(len(files) for files in self.rounds[1:])


def write_dimse_corpus(directory: Path, rounds: int, per_round: int, seed: int) -> DimseCorpus:
    """``rounds + 1`` rounds (one warm-up) of ``per_round`` small CT instances in series of
    10, for patients of their own (``BENCH-D…``, cleared from Orthanc with the rest of the
    corpus) so that nothing conflicts with what STOW-RS stored."""
    rng = random.Random(seed + 10_007)  # noqa: S311 (reproducible, not secret)
    per_series = min(10, per_round)
    series_per_round = -(-per_round // per_series)
    patients, studies = plan_studies(
        series_per_round * (rounds + 1), 1, per_series, rng, patient_prefix="BENCH-D"
    )
    writer = InstanceWriter(patients)
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for study in studies:
        for series in study.series:
            for sop_uid, data in zip(series.instances, writer.series(study, series), strict=True):
                path = directory / f"{sop_uid}.dcm"
                path.write_bytes(data)
                files.append(path)
    return DimseCorpus(
        tuple(tuple(files[start : start + per_round]) for start in range(0, len(files), per_round))[
            : rounds + 1
        ]
    )


def store_rounds(peer: DicomPeer, corpus: DimseCorpus, associations: int) -> Measurement:
    """Send every round over ``associations`` concurrent associations; instances/s per
    round, the warm-up round unmeasured."""
    storescu = shutil.which("storescu")
    if storescu is None:
        return Measurement(unavailable="n/a (no dcmtk storescu)")
    samples, seconds = [], []
    for index, files in enumerate(corpus.rounds):
        elapsed = _round(storescu, peer, files, associations)
        if index:
            samples.append(len(files) / elapsed)
            seconds.append(elapsed)
    return Measurement(
        samples=samples,
        detail={
            "instances": corpus.instances,
            "associations": associations,
            "round_seconds": [round(value, 3) for value in seconds],
        },
    )


def _round(storescu: str, peer: DicomPeer, files: Sequence[Path], associations: int) -> float:
    shares = [files[index::associations] for index in range(associations)]
    began = time.perf_counter()
    with ThreadPoolExecutor(associations, thread_name_prefix="storescu") as pool:
        for result in pool.map(lambda share: _send(storescu, peer, share), [s for s in shares if s]):
            if result.returncode != 0:
                # storescu exits non-zero when any C-STORE failed or the association was refused.
                raise RuntimeError(
                    f"storescu to {peer.ae_title}@{peer.host}:{peer.port} failed "
                    f"({result.returncode}): {result.stderr.strip()[-800:]}"
                )
    return time.perf_counter() - began


def _send(storescu: str, peer: DicomPeer, files: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            storescu,
            "--aetitle",
            CALLING_AE,
            "--call",
            peer.ae_title,
            # Propose exactly the stored transfer syntax (Explicit VR Little Endian):
            # both archives store what they receive, unchanged.
            "--propose-little",
            "--required",
            peer.host,
            str(peer.port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=ROUND_TIMEOUT,
        check=False,
    )
