"""The figures a run reports, their targets, the side-by-side table and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure import Measurement
from bench.targets import FILMLESS, ORTHANC

#: Results of the Filmless server whose index was seeded in bulk (QIDO figures only).
FILMLESS_AT_SCALE = "Filmless@scale"
#: Prefix of the figure keys measured on the bulk-seeded index.
AT_SCALE = "1m."


@dataclass(frozen=True)
class Goal:
    """A target from the issue: a minimum ratio to the peer, or a limit on Filmless's
    median (``strict``: below it, else at most it)."""

    text: str
    ratio: float | None = None
    limit: float | None = None
    strict: bool = False


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    goal: Goal | None = None


STOW = Goal("≥ 3x", ratio=3)
#: At least Orthanc's instances per second over its DICOM port.
DIMSE = Goal("≥ 1x", ratio=1)
#: Searches by a matching key or a UID in the path ("indexed lookups"): all but "all studies".
LOOKUP = Goal("≥ 5x", ratio=5)
QIDO_LABELS = {
    "qido.patient_id": "QIDO PatientID exact",
    "qido.accession": "QIDO AccessionNumber",
    "qido.month": "QIDO StudyDate, one month",
    "qido.year": "QIDO StudyDate, one year",
    "qido.name_prefix": "QIDO PatientName prefix*",
    "qido.modalities": "QIDO ModalitiesInStudy, limit 10",
    "qido.all": "QIDO all studies",
    "qido.series": "QIDO series of a study",
    "qido.instances": "QIDO instances of a series",
    "qido.includefield": "QIDO includefield=all",
}
VIEWER_FIGURES = {"view.rendered", "view.thumbnail_cold", "view.thumbnail_warm", "view.j2k_frame"}
LARGE_FIGURES = {"stow.large", "stow.large_rss", "wado.large_frame", "wado.large_frames"}
QIDO_GOALS = {"qido.all": Goal("≥ 20x", ratio=20)}
QIDO_SCALE_GOALS = {key: Goal("≤ 10 ms", limit=10) for key in QIDO_LABELS if key != "qido.all"}


def figures(
    clients: int,
    per_request: int,
    large_mib: float,
    scale: int,
    viewer: bool = True,
    associations: int = 0,
) -> list[Figure]:
    """Every figure, in report order, labelled after this run's corpus and seeded scale."""
    large = f"{large_mib:.0f} MiB multi-frame"
    at_scale = f"QIDO@{short_count(scale)}"
    rss_goal = Goal("< 100 MiB", limit=100, strict=True)
    every = [
        Figure("stow.small", f"STOW small ({clients} clients, {per_request}/request)", "inst/s", True, STOW),
        Figure("stow.large", f"STOW {large_mib:.0f} MiB instance", "MiB/s", True, STOW),
        Figure("dimse.store", f"DIMSE C-STORE ({associations} associations)", "inst/s", True, DIMSE),
        Figure("stow.large_rss", "  server peak RSS growth", "MiB", goal=rss_goal),
        Figure("http.ping", "HTTP round trip (health check)", "ms"),
        *(Figure(key, label, "ms", goal=QIDO_GOALS.get(key, LOOKUP)) for key, label in QIDO_LABELS.items()),
        Figure("wado.study", "WADO study retrieve", "ms"),
        Figure("wado.study_metadata", "WADO study metadata", "ms", goal=Goal("≥ 5x", ratio=5)),
        Figure("wado.study_metadata_304", "  revalidated (304)", "ms"),
        Figure("wado.series_metadata", "WADO series metadata", "ms"),
        Figure("wado.series_metadata_304", "  revalidated (304)", "ms"),
        Figure("wado.instance", "WADO one instance", "ms"),
        Figure("wado.frame", "WADO frame 1 of a small instance", "ms"),
        Figure("wado.large_frame", f"WADO random frame of {large}", "ms", goal=Goal("≥ 50x", ratio=50)),
        Figure("wado.large_frames", "WADO 10 frames of it", "ms"),
        Figure("view.rendered", "Rendered JPEG of a 512x512 CT slice", "ms", goal=Goal("≥ 2x", ratio=2)),
        Figure("view.thumbnail_cold", "Thumbnail of a slice, first request", "ms"),
        Figure("view.thumbnail_warm", "Thumbnail of a slice, repeated", "ms", goal=Goal("≥ 5x", ratio=5)),
        Figure("view.j2k_frame", "JPEG 2000 frame, decompressed", "ms"),
        *(
            Figure(AT_SCALE + key, label.replace("QIDO", at_scale), "ms", goal=QIDO_SCALE_GOALS.get(key))
            for key, label in QIDO_LABELS.items()
        ),
    ]
    return [
        figure
        for figure in every
        if (large_mib or figure.key not in LARGE_FIGURES)
        and (scale or not figure.key.startswith(AT_SCALE))
        and (viewer or figure.key not in VIEWER_FIGURES)
        and (associations or figure.key != "dimse.store")
    ]


def short_count(count: int) -> str:
    """
    >>> short_count(1_000_000), short_count(100_000), short_count(1234)
    ('1M', '100k', '1234')
    """
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return str(count)


Results = Mapping[str, Mapping[str, Measurement]]


@dataclass(frozen=True)
class Row:
    figure: Figure
    filmless: Measurement | None
    peer: Measurement | None
    ratio: float | None
    met: str


def rows(figure_list: Sequence[Figure], results: Results, has_peer: bool) -> list[Row]:
    out = []
    for figure in figure_list:
        scale = figure.key.startswith(AT_SCALE)
        key = figure.key.removeprefix(AT_SCALE)
        filmless = results.get(FILMLESS_AT_SCALE if scale else FILMLESS, {}).get(key)
        peer = None if scale else results.get(ORTHANC, {}).get(key)
        ratio = _ratio(figure, filmless, peer)
        out.append(Row(figure, filmless, peer, ratio, _met(figure, filmless, ratio, has_peer)))
    return out


def _ratio(figure: Figure, filmless: Measurement | None, peer: Measurement | None) -> float | None:
    ours = filmless.median if filmless else None
    theirs = peer.median if peer else None
    if not ours or not theirs:
        return None
    # Oriented so that > 1 always means Filmless is better.
    return ours / theirs if figure.higher_is_better else theirs / ours


def _met(figure: Figure, filmless: Measurement | None, ratio: float | None, has_peer: bool) -> str:
    goal = figure.goal
    if goal is None:
        return ""
    if goal.ratio is not None:
        if not has_peer:
            return "no peer"
        return "n/a" if ratio is None else ("yes" if ratio >= goal.ratio else "NO")
    median = filmless.median if filmless else None
    if median is None or goal.limit is None:
        return "n/a"
    return "yes" if (median < goal.limit if goal.strict else median <= goal.limit) else "NO"


def number(value: float | None) -> str:
    """
    >>> number(1234.5), number(45.678), number(3.14159), number(None)
    ('1234', '45.7', '3.14', '')
    """
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _cells(measurement: Measurement | None, figure: Figure, absent: str) -> list[str]:
    if measurement is None:
        return [absent, ""]
    if measurement.median is None:
        return [measurement.unavailable or "n/a", ""]
    return [number(measurement.median), number(measurement.tail(figure.higher_is_better))]


def table(row_list: Sequence[Row], has_peer: bool, title: str) -> str:
    header = ["Figure", "Unit", "Filmless", "tail", "Orthanc", "tail", "Ratio", "Target", "Met"]
    lines = [header]
    for row in row_list:
        scale = row.figure.key.startswith(AT_SCALE)
        peer_absent = "not seeded" if scale else ("not run" if has_peer else "no peer")
        lines.append(
            [
                row.figure.label,
                row.figure.unit,
                *_cells(row.filmless, row.figure, "not run"),
                *_cells(row.peer, row.figure, peer_absent),
                f"{row.ratio:.2f}x" if row.ratio is not None else "",
                row.figure.goal.text if row.figure.goal else "",
                row.met,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0, 1, 7, 8}
    rendered = [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    rule = "-" * len(rendered[0])
    return "\n".join([title, rule, rendered[0], rule, *rendered[1:], rule])


LEGEND = (
    "Medians; 'tail' is the 90th-percentile latency, or for rates the 10th percentile (the rate\n"
    "exceeded 90 % of the time). Ratio = Filmless over Orthanc at the median, oriented so that\n"
    "> 1 means Filmless is better (Orthanc's latency / Filmless's, Filmless's rate / Orthanc's).\n"
    "QIDO@<n> rows: Filmless on an index seeded in bulk with n instances; Orthanc is not seeded."
)


def mismatches(results: Results) -> list[str]:
    """Searches and metadata whose result counts differ between the targets: a sign that
    one of them did not understand the request, which would make its timing meaningless."""
    ours, theirs = results.get(FILMLESS, {}), results.get(ORTHANC, {})
    notes = []
    for key, measurement in ours.items():
        if not (key.startswith("qido.") or key.endswith("metadata")) or key not in theirs:
            continue
        mine, peer = measurement.detail.get("sizes"), theirs[key].detail.get("sizes")
        if mine and peer and mine != peer:
            notes.append(f"{key}: results per request differ: Filmless {mine[:8]} vs Orthanc {peer[:8]}")
    # Every seeded patient has a study: finding none means the seeded rows are invisible to
    # the benchmark's requests (owned by someone else), and the at-scale timings are void.
    found = results.get(FILMLESS_AT_SCALE, {}).get("qido.patient_id")
    if found and 0 in found.detail.get("sizes", []):
        notes.append("QIDO at scale: a seeded patient was not found; the seeded rows are not visible")
    return notes


def write_json(path: Path, run: dict[str, Any], row_list: Sequence[Row]) -> None:
    document = {
        "run": run,
        "figures": [
            {
                **asdict(row.figure),
                "filmless": row.filmless.to_json(row.figure.higher_is_better) if row.filmless else None,
                "orthanc": row.peer.to_json(row.figure.higher_is_better) if row.peer else None,
                "ratio": row.ratio,
                "met": row.met or None,
            }
            for row in row_list
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
