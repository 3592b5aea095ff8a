"""The figures a run reports, their targets, the side-by-side table and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure import Measurement, percentile
from bench.targets import FILMLESS, NGINX, ORTHANC

#: Results of the Filmless server whose index was seeded in bulk (QIDO figures only).
FILMLESS_AT_SCALE = "Filmless@scale"
#: Prefix of the figure keys measured on the bulk-seeded index.
AT_SCALE = "1m."


@dataclass(frozen=True)
class Goal:
    """A performance target: a minimum ratio to the peer, or a bound on Filmless's
    median: strictly ``below`` it, or ``at_least`` it."""

    text: str
    ratio: float | None = None
    below: float | None = None
    at_least: float | None = None


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    goal: Goal | None = None
    #: A row derived from the figure of this key: each archive's median as a percentage of
    #: nginx's on it (the retrievals, in MiB/s).
    share_of: str | None = None
    #: Measured on nginx alone (the study as its files): the archives' cells stay empty.
    ceiling_only: bool = False


def times(ratio: float) -> Goal:
    """At least ``ratio`` times Orthanc, as the ratio column orients it (> 1: better)."""
    return Goal(f"≥ {ratio:g}x", ratio=ratio)


#: Figures without a target print this in the target column.
NO_TARGET = "—"
RSS_GOAL = Goal("< 100 MiB", below=100)
#: Searches and metadata: at least 5x.
LOOKUP = times(5)
#: Paths that move images: at least 1.5x.
MOVES = times(1.5)
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
#: QIDO's targets: the exact keys (PatientID, AccessionNumber, the series of a study) and
#: includefield=all; the other searches have none.
QIDO_GOALS = {
    key: LOOKUP for key in ("qido.patient_id", "qido.accession", "qido.series", "qido.includefield")
}
VIEWER_FIGURES = {
    "view.rendered",
    "view.rendered_png",
    "view.thumbnail_cold",
    "view.thumbnail_warm",
    "view.j2k_frame",
}
LARGE_FIGURES = {"stow.large", "stow.large_rss", "wado.large_frame", "wado.large_frames"}
#: The retrievals nginx serves too, with the share of its MiB/s each archive reaches (the
#: study's: at least 50 %).
RETRIEVALS = {
    "wado.instance": ("WADO-RS retrieve one instance", None),
    "wado.series": ("WADO-RS retrieve a series", None),
    "wado.study": ("WADO-RS retrieve a study", Goal("≥ 50 %", at_least=50)),
}


def figures(
    clients: int,
    per_request: int,
    large_mib: float,
    scale: int,
    viewer: bool = True,
    associations: int = 0,
    huge_mib: float = 0,
    instances_per_study: int = 30,
) -> list[Figure]:
    """Every figure, in report order, labelled after this run's corpus and seeded scale."""
    large = f"{large_mib:.0f} MiB multi-frame"
    at_scale = f"QIDO@{short_count(scale)}"
    retrievals = []
    for key, (label, share_goal) in RETRIEVALS.items():
        size = f" ({instances_per_study} instances)" if key == "wado.study" else ""
        retrievals += [
            Figure(key, label + size, "MiB/s", True, MOVES),
            Figure(key + ".nginx_share", "  share of nginx's MiB/s", "%", True, share_goal, share_of=key),
        ]
    every = [
        Figure("stow.small", f"STOW small ({clients} clients, {per_request}/request)", "inst/s", True, MOVES),
        Figure("stow.large", f"STOW {large_mib:.0f} MiB instance", "MiB/s", True, times(2)),
        Figure("stow.large_rss", "  server peak RSS growth", "MiB", goal=RSS_GOAL),
        Figure(
            "stow.huge_rss", f"STOW {huge_mib:.0f} MiB instance: server peak RSS growth", "MiB", goal=RSS_GOAL
        ),
        Figure("dimse.store", f"DIMSE C-STORE ({associations} associations)", "inst/s", True, MOVES),
        Figure("http.ping", "HTTP round trip (health check)", "ms"),
        *(Figure(key, label, "ms", goal=QIDO_GOALS.get(key)) for key, label in QIDO_LABELS.items()),
        *retrievals,
        Figure(
            "wado.study_files",
            "  nginx: the study's files, one request each",
            "MiB/s",
            True,
            ceiling_only=True,
        ),
        Figure("wado.study_metadata", "WADO study metadata", "ms", goal=LOOKUP),
        Figure("wado.study_metadata_304", "  revalidated (304)", "ms"),
        Figure("wado.series_metadata", "WADO series metadata", "ms"),
        Figure("wado.series_metadata_304", "  revalidated (304)", "ms"),
        Figure("wado.frame", "WADO frame 1 of a small instance", "ms", goal=MOVES),
        Figure("wado.rendered", "Rendered JPEG of a small instance", "ms", goal=MOVES),
        Figure("wado.rendered_png", "Rendered PNG of a small instance", "ms", goal=MOVES),
        Figure("wado.large_frame", f"WADO random frame of {large}", "ms"),
        Figure("wado.large_frames", "WADO 10 frames of it", "ms"),
        Figure("view.rendered", "Rendered JPEG of a 512x512 CT slice", "ms", goal=MOVES),
        Figure("view.rendered_png", "Rendered PNG of a 512x512 CT slice", "ms", goal=MOVES),
        Figure("view.thumbnail_cold", "Thumbnail of a slice, first request", "ms", goal=times(1)),
        Figure("view.thumbnail_warm", "Thumbnail of a slice, repeated", "ms", goal=times(5)),
        Figure("view.j2k_frame", "JPEG 2000 frame, decompressed", "ms"),
        *(
            Figure(AT_SCALE + key, label.replace("QIDO", at_scale), "ms")
            for key, label in QIDO_LABELS.items()
        ),
    ]
    return [
        figure
        for figure in every
        if (large_mib or figure.key not in LARGE_FIGURES)
        and (huge_mib or figure.key != "stow.huge_rss")
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
    #: nginx serving the same bytes (retrievals, round trip); None where it has no part.
    ceiling: Measurement | None
    ratio: float | None
    met: str


def rows(figure_list: Sequence[Figure], results: Results, has_peer: bool) -> list[Row]:
    out = []
    ceiling = results.get(NGINX, {})
    for figure in figure_list:
        scale = figure.key.startswith(AT_SCALE)
        key = figure.key.removeprefix(AT_SCALE)
        if figure.ceiling_only:
            out.append(Row(figure, None, None, ceiling.get(key), None, ""))
            continue
        if figure.share_of is not None:
            nginx = ceiling.get(figure.share_of)
            filmless = _share(results.get(FILMLESS, {}).get(figure.share_of), nginx)
            peer = _share(results.get(ORTHANC, {}).get(figure.share_of), nginx)
            out.append(Row(figure, filmless, peer, None, None, _met(figure, filmless, None, has_peer)))
            continue
        filmless = results.get(FILMLESS_AT_SCALE if scale else FILMLESS, {}).get(key)
        peer = None if scale else results.get(ORTHANC, {}).get(key)
        ratio = _ratio(figure, filmless, peer)
        nginx = None if scale else ceiling.get(key)
        out.append(Row(figure, filmless, peer, nginx, ratio, _met(figure, filmless, ratio, has_peer)))
    return out


def _share(archive: Measurement | None, nginx: Measurement | None) -> Measurement | None:
    """An archive's median as a percentage of nginx's, as a one-sample measurement.

    >>> _share(Measurement([40.0, 50.0]), Measurement([100.0])).median
    45.0
    >>> _share(Measurement([40.0]), Measurement(unavailable="n/a (no nginx)")).unavailable
    'n/a (no nginx)'
    """
    if archive is None:
        return None
    if archive.median is None:
        return Measurement(unavailable=archive.unavailable or "n/a")
    if nginx is None or not nginx.median:
        return Measurement(unavailable=(nginx.unavailable if nginx else None) or "n/a (no nginx)")
    share = 100 * archive.median / nginx.median
    return Measurement([share], detail={"derived": True, "nginx_median": nginx.median})


def _ratio(figure: Figure, filmless: Measurement | None, peer: Measurement | None) -> float | None:
    ours = filmless.median if filmless else None
    theirs = peer.median if peer else None
    if not ours or not theirs:
        return None
    # Oriented so that > 1 always means Filmless is better.
    return ours / theirs if figure.higher_is_better else theirs / ours


def _met(figure: Figure, filmless: Measurement | None, ratio: float | None, has_peer: bool) -> str:
    """``met`` or ``not met``; ``no peer`` or ``n/a`` when it cannot be told; empty
    without a target.

    >>> figure = Figure("k", "label", "ms", goal=times(5))
    >>> _met(figure, None, 5.2, True), _met(figure, None, 4.9, True), _met(figure, None, None, False)
    ('met', 'not met', 'no peer')
    >>> _met(Figure("k", "l", "MiB", goal=RSS_GOAL), Measurement([120.0]), None, False)
    'not met'
    """
    goal = figure.goal
    if goal is None:
        return ""
    if goal.ratio is not None:
        if not has_peer:
            return "no peer"
        return "n/a" if ratio is None else _verdict(ratio >= goal.ratio)
    median = filmless.median if filmless else None
    if median is None:
        return "n/a"
    if goal.below is not None:
        return _verdict(median < goal.below)
    return _verdict(goal.at_least is None or median >= goal.at_least)


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


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
    # A derived row (a share of nginx's) has one value and no tail.
    tail = "" if measurement.detail.get("derived") else number(measurement.tail(figure.higher_is_better))
    return [number(measurement.median), tail]


HEADER = ["Figure", "Unit", "Filmless", "tail", "Orthanc", "tail", "nginx", "Ratio", "Target", "Met"]


def table(row_list: Sequence[Row], has_peer: bool, title: str) -> str:
    lines = [HEADER]
    for row in row_list:
        scale = row.figure.key.startswith(AT_SCALE)
        peer_absent = "not seeded" if scale else ("not run" if has_peer else "no peer")
        lone = row.figure.ceiling_only
        if row.ceiling is None:
            nginx = ""
        elif row.ceiling.median is None:
            nginx = row.ceiling.unavailable or "n/a"
        else:
            nginx = number(row.ceiling.median)
        lines.append(
            [
                row.figure.label,
                row.figure.unit,
                *(["", ""] if lone else _cells(row.filmless, row.figure, "not run")),
                *(["", ""] if lone else _cells(row.peer, row.figure, peer_absent)),
                nginx,
                f"{row.ratio:.2f}x" if row.ratio is not None else "",
                row.figure.goal.text if row.figure.goal else ("" if lone else NO_TARGET),
                row.met,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    left = {0, 1, 8, 9}
    rendered = [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    rule = "-" * max(len(line) for line in rendered)
    return "\n".join([title, rule, rendered[0], rule, *rendered[1:], rule])


LEGEND = (
    "Medians; 'tail' is the 90th-percentile latency, or for rates the 10th percentile (the rate\n"
    "exceeded 90 % of the time). Ratio = Filmless over Orthanc at the median, oriented so that\n"
    "> 1 means Filmless is better (Orthanc's latency / Filmless's, Filmless's rate / Orthanc's).\n"
    "nginx: Debian's nginx serving the same bytes as static files over loopback (the physical\n"
    "ceiling); 'share of nginx's MiB/s' = each archive's median over nginx's.\n"
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
    # nginx serves the corpus's bytes: an archive whose retrieval is much smaller or larger
    # did not send what was stored, and its MiB/s would compare unlike things.
    ceiling = results.get(NGINX, {})
    for name in (FILMLESS, ORTHANC):
        for key in RETRIEVALS:
            mine = results.get(name, {}).get(key)
            static = ceiling.get(key)
            if not (mine and static and mine.detail.get("sizes") and static.detail.get("sizes")):
                continue
            sent, stored = percentile(mine.detail["sizes"], 50), percentile(static.detail["sizes"], 50)
            if abs(sent - stored) > 0.01 * stored:
                notes.append(f"{key}: {name} sends {sent:.0f} bytes, the stored bytes are {stored:.0f}")
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
                "nginx": row.ceiling.to_json(row.figure.higher_is_better) if row.ceiling else None,
                "ratio": row.ratio,
                "met": row.met or None,
            }
            for row in row_list
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
