"""``python -m bench.run``: build the corpus, measure Filmless (and Orthanc when
``ORTHANC_URL`` is set) in one run, print the side-by-side table and write the JSON.

Every step prints what it does; ``--help`` lists the knobs (a quick run: ``--studies 20
--scale 100000``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from app.dicom.leniency import read_leniently
from bench.ceiling import measure_ceiling
from bench.corpus import (
    MIB,
    InstanceWriter,
    LargeInstance,
    Study,
    ViewerStudy,
    plan_studies,
    plan_viewer_study,
    uid_source,
    viewer_instances,
    write_large_instance,
)
from bench.dimse import DicomPeer, DimseCorpus, store_rounds, write_dimse_corpus
from bench.measure import Measurement, Plan
from bench.report import FILMLESS_AT_SCALE, LEGEND, figures, mismatches, rows, short_count, table, write_json
from bench.seed import Layout, sample_studies, seed_index
from bench.services import Backing, backing_services, serve_filmless
from bench.stow import StowRequest, build_requests, post, store_huge, store_large, store_small, stow_request
from bench.targets import FILMLESS, NGINX, ORTHANC, Target, clear_orthanc_corpus, orthanc_base, orthanc_target
from bench.workload import QIDO, VIEWER, WADO, Catalog, LargeRef, measure_ping, measure_reads

RESULTS = Path(__file__).parent / "results"
#: Studies drawn from the seeded index for the at-scale searches.
SCALE_SAMPLE = 200
#: Rows and columns of the large instance's frames: 512 x 512 x 16 bits = 0.5 MiB a frame.
LARGE_SIDE = 512
#: Rows and columns of the viewer study's CT slices, and how many of them are also stored
#: as JPEG 2000.
CT_SIDE, J2K_SLICES = 512, 10
#: Instances per STOW request of the viewer study (0.5 MiB each).
VIEWER_PER_REQUEST = 5
#: MiB of the huge instance by default.
HUGE_MIB = 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Measure Filmless, and Orthanc at $ORTHANC_URL when set, with the same corpus "
        "and requests; print the side-by-side table and write the figures as JSON.",
    )
    corpus = parser.add_argument_group("corpus")
    add = corpus.add_argument
    add("--studies", type=int, default=200, help="studies of small instances (200)")
    add("--series", type=int, default=3, help="series per study (3)")
    add("--instances", type=int, default=10, help="instances per series (10)")
    add(
        "--large-frames",
        type=int,
        default=200,
        help=f"frames of the {LARGE_SIDE}x{LARGE_SIDE} 16-bit multi-frame instance (200 = 100 MiB; 0: none)",
    )
    add("--large-stows", type=int, default=3, help="measured STOWs of it, after one warm-up (3)")
    add(
        "--huge-stow-mib",
        type=int,
        default=HUGE_MIB,
        help=f"MiB of one more multi-frame instance, stored once, last, for the server's peak RSS "
        f"growth alone ({HUGE_MIB}; 0: none)",
    )
    add(
        "--viewer-slices",
        type=int,
        default=40,
        help=f"{CT_SIDE}x{CT_SIDE} 16-bit CT slices of the viewer study, raised to one more than "
        "the warm-up and measured requests of a figure so that every cold thumbnail is a first "
        "request (40; 0: no viewer figures)",
    )
    add(
        "--dimse-rounds",
        type=int,
        default=5,
        help="measured rounds of DIMSE C-STORE, after one warm-up (5; 0: no DIMSE figure)",
    )
    add("--dimse-per-round", type=int, default=120, help="small instances per C-STORE round (120)")
    add("--seed", type=int, default=1, help="RNG seed: same seed, same corpus and requests (1)")
    work = parser.add_argument_group("workload")
    add = work.add_argument
    add("--clients", type=int, default=4, help="concurrent STOW clients (4)")
    add("--per-request", type=int, default=10, help="instances per STOW request (10)")
    add("--associations", type=int, default=4, help="concurrent DIMSE associations (4)")
    add("--warmup", type=int, default=2, help="unmeasured requests before each figure (2)")
    add("--repetitions", type=int, default=20, help="measured requests per figure (20)")
    add(
        "--budget",
        type=float,
        default=60,
        help="seconds after which a figure stops repeating, once it has 5 samples (60)",
    )
    add(
        "--scale",
        type=int,
        default=1_000_000,
        help="instances seeded in bulk for the QIDO@1M figures (1000000; 0: skip)",
    )
    where = parser.add_argument_group("targets")
    add = where.add_argument
    add(
        "--store",
        choices=["s3", "filesystem"],
        default="s3",
        help="Filmless's object store: SeaweedFS over S3 (default, as in production) or local files",
    )
    add(
        "--workers",
        type=int,
        default=None,
        help="Filmless's worker processes, FILMLESS_WORKERS (default: unset, so the server's own "
        "default, as deployed)",
    )
    add(
        "--orthanc-dicom-port",
        type=int,
        default=int(os.environ.get("ORTHANC_DICOM_PORT", "4242")),
        help="Orthanc's DICOM port, on the host of its URL (default: $ORTHANC_DICOM_PORT or 4242)",
    )
    add("--orthanc-aet", default="ORTHANC", help="Orthanc's AE title (ORTHANC)")
    add(
        "--orthanc-url",
        default=os.environ.get("ORTHANC_URL"),
        help="Orthanc to compare with, its "
        "base or DICOMweb root (default: $ORTHANC_URL; unset: Filmless alone)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory of the JSON results")
    args = parser.parse_args(argv)
    names = ("studies", "series", "instances", "clients", "per_request", "repetitions")
    for name in (*names, "associations", "dimse_per_round"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.huge_stow_mib < 0:
        parser.error("--huge-stow-mib must not be negative")
    return args


@dataclass(frozen=True)
class Corpus:
    studies: list[Study]
    requests: list[StowRequest]
    large: LargeInstance | None
    #: SOP Instance UIDs of the large instance's STOWs (the first is the warm-up's).
    large_uids: list[str]
    viewer: ViewerStudy | None = None
    #: The viewer study as STOW-RS requests (stored untimed, after the timed loads).
    viewer_requests: tuple[StowRequest, ...] = ()
    #: Files for the DIMSE C-STORE figure, sent after every read figure.
    dimse: DimseCorpus | None = None
    #: The huge instance, stored once, last, under this SOP Instance UID.
    huge: LargeInstance | None = None
    huge_uid: str = ""

    def instance(self, sop_uid: str) -> memoryview:
        """A small instance's Part 10 bytes, exactly as stored over STOW-RS."""
        if not self._parts:
            for request in self.requests:
                for index, uid in enumerate(request.sop_uids):
                    self._parts[uid] = (request, index)
        request, index = self._parts[sop_uid]
        return request.part(index)

    #: SOP Instance UID -> its request and its place in it (filled on first use).
    _parts: dict[str, tuple[StowRequest, int]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def instances(self) -> int:
        return sum(request.instances for request in self.requests)

    @property
    def all_limit(self) -> int:
        return len(self.studies) + (self.large is not None) + (self.viewer is not None)


def build_corpus(args: argparse.Namespace, workdir: Path) -> Corpus:
    rng = random.Random(args.seed)  # noqa: S311 (reproducible, not secret)
    patients, studies = plan_studies(args.studies, args.series, args.instances, rng)
    requests = build_requests(InstanceWriter(patients), studies, args.per_request)
    uids = uid_source(rng)
    large = (
        write_large_instance(workdir / "large.dcm", args.large_frames, LARGE_SIDE, LARGE_SIDE, uids)
        if args.large_frames
        else None
    )
    large_uids = [next(uids) for _ in range(args.large_stows + 1)] if large else []
    dimse = (
        write_dimse_corpus(workdir / "dimse", args.dimse_rounds, args.dimse_per_round, args.seed)
        if args.dimse_rounds
        else None
    )
    huge, huge_uid = None, ""
    if args.huge_stow_mib:
        frames = -(-args.huge_stow_mib * MIB // (LARGE_SIDE * LARGE_SIDE * 2))
        # UIDs of its own, so the rest of the corpus is the same with or without it.
        huge_uids = uid_source(random.Random(args.seed + 20_011))  # noqa: S311 (not secret)
        huge = write_large_instance(workdir / "huge.dcm", frames, LARGE_SIDE, LARGE_SIDE, huge_uids)
        huge_uid = next(huge_uids)
    if not args.viewer_slices:
        return Corpus(studies, requests, large, large_uids, dimse=dimse, huge=huge, huge_uid=huge_uid)
    slices = max(args.viewer_slices, args.warmup + args.repetitions + 1)
    viewer = plan_viewer_study(slices, min(J2K_SLICES, slices), uids)
    native, j2k = viewer_instances(viewer, CT_SIDE, args.seed)
    viewer_requests = tuple(
        stow_request(series[start : start + VIEWER_PER_REQUEST])
        for series in (native, j2k)
        for start in range(0, len(series), VIEWER_PER_REQUEST)
    )
    return Corpus(studies, requests, large, large_uids, viewer, viewer_requests, dimse, huge, huge_uid)


def measure_target(target: Target, corpus: Corpus, args: argparse.Namespace) -> dict[str, Measurement]:
    """Load the corpus into ``target`` over STOW-RS, then run every read figure."""
    plan = Plan(args.warmup, args.repetitions, args.budget)
    print(f"{target.name}: STOW of {corpus.instances} instances, {args.clients} clients", flush=True)
    results = {"stow.small": store_small(target, corpus.requests, args.clients, args.warmup)}
    _print_brief(target, "stow.small", results["stow.small"], "inst/s")
    large_ref = None
    if corpus.large is not None:
        print(f"{target.name}: STOW of the large instance, {len(corpus.large_uids)} times", flush=True)
        results["stow.large"], results["stow.large_rss"] = store_large(
            target, corpus.large, corpus.large_uids
        )
        _print_brief(target, "stow.large", results["stow.large"], "MiB/s")
        _print_brief(target, "stow.large_rss", results["stow.large_rss"], "MiB")
        large = corpus.large
        large_ref = LargeRef(large.study, large.series, corpus.large_uids[0], large.frames)
    if corpus.viewer is not None:
        print(f"{target.name}: STOW of the viewer study, {corpus.viewer.instances} instances", flush=True)
        with target.client() as client:
            for request in corpus.viewer_requests:
                post(client, target, request)
    catalog = Catalog(corpus.studies, corpus.all_limit, large_ref, corpus.viewer)
    results["http.ping"] = measure_ping(target, plan)
    results |= measure_reads(target, QIDO, catalog, plan, args.seed)
    results |= measure_reads(target, WADO, catalog, plan, args.seed)
    results |= measure_reads(target, VIEWER, catalog, plan, args.seed)
    if corpus.dimse is not None and target.dicom is not None:
        # Last, so that its studies are not among those the read figures search.
        print(f"{target.name}: DIMSE C-STORE of {corpus.dimse.instances} instances", flush=True)
        results["dimse.store"] = store_rounds(target.dicom, corpus.dimse, args.associations)
        _print_brief(target, "dimse.store", results["dimse.store"], "inst/s")
    if corpus.huge is not None:
        # Last: a GiB in the store would otherwise crowd the page cache the reads use.
        print(f"{target.name}: STOW of the {corpus.huge.pixel_bytes / MIB:.0f} MiB instance", flush=True)
        results["stow.huge_rss"] = store_huge(target, corpus.huge, corpus.huge_uid)
        _print_brief(target, "stow.huge_rss", results["stow.huge_rss"], "MiB")
    return results


def _print_brief(target: Target, key: str, measurement: Measurement, unit: str) -> None:
    value = (
        f"median {measurement.median:.1f} {unit}"
        if measurement.median is not None
        else measurement.unavailable
    )
    print(f"  {target.name:<14} {key:<26} {value}", flush=True)


async def measure_filmless(
    backing: Backing, corpus: Corpus, args: argparse.Namespace, workdir: Path, info: dict[str, Any]
) -> dict[str, Measurement]:
    url = await backing.postgres.create_database("filmless_bench")
    with serve_filmless(
        url, backing.s3, workdir / "filmless", max_limit=max(1000, corpus.all_limit), workers=args.workers
    ) as server:
        info["workers"] = server.workers
        print(f"{FILMLESS}: {server.workers} worker process(es) at {server.url}", flush=True)
        target = Target(
            FILMLESS,
            server.dicomweb,
            server.pid,
            server.url + "/healthz",
            headers=server.headers,
            dicom=DicomPeer("127.0.0.1", server.dicom_port, "FILMLESS"),
        )
        return await asyncio.to_thread(measure_target, target, corpus, args)


async def measure_at_scale(
    backing: Backing, corpus: Corpus, args: argparse.Namespace, workdir: Path, info: dict[str, Any]
) -> dict[str, Measurement]:
    """QIDO on a second, empty database seeded in bulk: migrated by the server's start-up,
    then filled behind its back (nothing is cached in the server), vacuumed, searched."""
    url = await backing.postgres.create_database("filmless_bench_scale")
    layout = Layout(args.scale, args.series, args.instances)
    limit = max(1000, corpus.all_limit)
    with serve_filmless(url, backing.s3, workdir / "scale", max_limit=limit, workers=args.workers) as server:
        target = Target(FILMLESS_AT_SCALE, server.dicomweb, server.pid, headers=server.headers)
        with target.client() as client:
            # The template the seed copies ownership and bookkeeping columns from.
            post(client, target, corpus.requests[0])
        print(f"{FILMLESS_AT_SCALE}: seeding {layout.total_instances:,} instances in bulk", flush=True)
        seconds = await seed_index(url, layout, lambda line: print(f"  {line}", flush=True))
        info |= {"instances": layout.total_instances, "studies": layout.studies, "seconds": round(seconds, 1)}
        print(f"  seeded in {seconds:.0f} s", flush=True)
        rng = random.Random(args.seed)  # noqa: S311 (reproducible, not secret)
        catalog = Catalog(await sample_studies(url, layout, SCALE_SAMPLE, rng), corpus.all_limit)
        plan = Plan(args.warmup, args.repetitions, args.budget)
        return await asyncio.to_thread(measure_reads, target, QIDO, catalog, plan, args.seed)


def measure_orthanc(
    url: str, corpus: Corpus, args: argparse.Namespace, info: dict[str, Any]
) -> dict[str, Measurement]:
    """Orthanc cleared of any previous run's corpus, measured, then cleared again."""
    host = urllib.parse.urlsplit(orthanc_base(url)).hostname or "127.0.0.1"
    target = orthanc_target(url, DicomPeer(host, args.orthanc_dicom_port, args.orthanc_aet))
    base = orthanc_base(url)
    with target.client() as client:
        info |= _orthanc_versions(client, base) | {"pid": target.pid}
        print(f"{ORTHANC}: deleting a previous run's corpus", flush=True)
        clear_orthanc_corpus(client, base)
    try:
        return measure_target(target, corpus, args)
    finally:
        with target.client() as client:
            clear_orthanc_corpus(client, base)


def _orthanc_versions(client: httpx.Client, base: str) -> dict[str, Any]:
    system = client.get(f"{base}/system").json()
    plugin = client.get(f"{base}/plugins/dicom-web")
    return {
        "version": system.get("Version"),
        "dicomweb_plugin": plugin.json().get("Version") if plugin.status_code == 200 else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    info: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "stamp": started.strftime("%Y%m%dT%H%M%SZ"),
        "args": _jsonable(vars(args)),
    }
    info["machine"] = _machine()
    results: dict[str, dict[str, Measurement]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="filmless-bench-") as tmp:
        workdir = Path(tmp)
        began = time.perf_counter()
        corpus = build_corpus(args, workdir)
        large = f", a {corpus.large.pixel_bytes / MIB:.0f} MiB multi-frame" if corpus.large else ""
        viewer = f", a viewer study of {corpus.viewer.instances} CT slices" if corpus.viewer else ""
        huge = f", a {corpus.huge.pixel_bytes / MIB:.0f} MiB multi-frame for memory" if corpus.huge else ""
        seconds = time.perf_counter() - began
        print(
            f"corpus: {corpus.instances} instances in {len(corpus.studies)} studies{large}{viewer}{huge} "
            f"({seconds:.0f} s)"
        )
        # The ceiling first, on a machine that no archive keeps busy (Orthanc, for one, is
        # still at work for a while after storing a GiB).
        plan = Plan(args.warmup, args.repetitions, args.budget)
        catalog = Catalog(corpus.studies, corpus.all_limit)
        work = asyncio.to_thread(measure_ceiling, catalog, plan, args.seed, corpus.instance)
        await _guarded(errors, NGINX, results, work)
        ping = results.get(NGINX, {}).get("http.ping", Measurement())
        info["nginx"] = {"version": ping.detail.get("version")}
        async with backing_services(args.store) as backing:
            info["filmless"] = {"store": args.store}
            work = measure_filmless(backing, corpus, args, workdir, info["filmless"])
            await _guarded(errors, FILMLESS, results, work)
            if args.scale:
                info["scale"] = {}
                work = measure_at_scale(backing, corpus, args, workdir, info["scale"])
                await _guarded(errors, FILMLESS_AT_SCALE, results, work)
        if args.orthanc_url:
            info["orthanc"] = {"url": args.orthanc_url}
            work = asyncio.to_thread(measure_orthanc, args.orthanc_url, corpus, args, info["orthanc"])
            await _guarded(errors, ORTHANC, results, work)
        large_mib = corpus.large.pixel_bytes / MIB if corpus.large else 0
        huge_mib = corpus.huge.pixel_bytes / MIB if corpus.huge else 0
    info["seconds"] = round(time.perf_counter() - began)
    info["errors"] = errors
    _report(args, corpus, results, info, large_mib, huge_mib)
    return info


async def _guarded(
    errors: dict[str, str], name: str, results: dict[str, dict[str, Measurement]], work: Any
) -> None:
    """Await ``work``; a target that fails is reported as such, the others still are."""
    try:
        results[name] = await work
    except Exception as error:
        errors[name] = "\n".join([f"{type(error).__name__}: {error}", *getattr(error, "__notes__", [])])
        print(f"{name} FAILED: {errors[name]}", file=sys.stderr, flush=True)


def _report(
    args: argparse.Namespace,
    corpus: Corpus,
    results: dict[str, dict[str, Measurement]],
    info: dict[str, Any],
    large_mib: float,
    huge_mib: float,
) -> None:
    figure_list = figures(
        args.clients,
        args.per_request,
        large_mib,
        args.scale,
        corpus.viewer is not None,
        args.associations if corpus.dimse else 0,
        huge_mib,
        args.series * args.instances,
    )
    has_peer = ORTHANC in results
    row_list = rows(figure_list, results, has_peer)
    print()
    print(table(row_list, has_peer, _title(args, corpus, info, large_mib)))
    print(LEGEND)
    for note in mismatches(results):
        print("warning:", note)
    for name, error in info["errors"].items():
        print(f"{name} failed: {error}")
    path = args.output / f"bench-{info['stamp']}.json"
    write_json(path, info, row_list)
    print(f"results: {path}")


def _title(args: argparse.Namespace, corpus: Corpus, info: dict[str, Any], large_mib: float) -> str:
    peer = f"Orthanc {info['orthanc'].get('version')}" if "orthanc" in info else "no peer"
    workers = info.get("filmless", {}).get("workers")
    default = " (its default)" if args.workers is None else ""
    ceiling = info.get("nginx", {}).get("version") or "no nginx"
    parts = [
        f"Filmless ({args.store} store, {workers} worker process(es){default}) vs {peer}, and {ceiling}",
        f"{len(corpus.studies)} studies x {args.series} series x {args.instances} instances",
    ]
    if large_mib:
        parts.append(f"+ one {large_mib:.0f} MiB multi-frame")
    if corpus.viewer:
        v = corpus.viewer
        parts.append(
            f"+ a viewer study: {len(v.ct_instances)} CT slices {CT_SIDE}x{CT_SIDE}x16 bits, "
            f"{len(v.j2k_instances)} of them also as JPEG 2000"
        )
    parts.append(f"{args.repetitions} repetitions after {args.warmup} warm-up")
    if seeded := info.get("scale", {}).get("instances"):
        parts.append(f"QIDO@{short_count(args.scale)}: {seeded:,} instances seeded")
    return "; ".join(parts)


def _machine() -> dict[str, Any]:
    memory = (
        Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        if Path("/proc/meminfo").exists()
        else None
    )
    return {
        "cpus": os.cpu_count(),
        "memory_kib": int(memory) if memory else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": _commit(),
    }


def _commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}


def main(argv: list[str] | None = None) -> int:
    # CT_small.dcm bends a few rules that strict validation would warn about on every write.
    read_leniently()
    args = parse_args(argv)
    info = asyncio.run(run(args))
    return 1 if info["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
