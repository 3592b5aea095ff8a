"""The read workload: QIDO-RS searches and WADO-RS retrievals, each figure a list of
requests drawn from the stored studies with an RNG seeded by the figure's name, so every
target answers exactly the same requests in the same order."""

from __future__ import annotations

import calendar
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench.corpus import CT_WINDOW, DAYS, FIRST_DAY, MIB, MODALITIES, Series, Study, ViewerStudy
from bench.measure import Measurement, Plan, Unavailable, repeat
from bench.targets import Target

JSON = "application/dicom+json"
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
#: Frames decompressed: Explicit VR Little Endian, what a client without a JPEG 2000 decoder asks.
ACCEPT_DECOMPRESSED = (
    'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
)
#: Page size of filtered study searches: a worklist's first page (OHIF asks for 101).
PAGE = 100
FRAMES_PER_REQUEST = 10


@dataclass(frozen=True)
class LargeRef:
    """The stored multi-frame instance the frame figures read."""

    study: str
    series: str
    instance: str
    frames: int


@dataclass(frozen=True)
class Catalog:
    """What a target holds that the reads may ask for."""

    studies: Sequence[Study]
    #: ``limit`` of the "all studies" search: at least every study of the corpus.
    all_limit: int
    large: LargeRef | None = None
    viewer: ViewerStudy | None = None


@dataclass(frozen=True)
class Read:
    path: str
    params: tuple[tuple[str, str], ...] = ()
    accept: str = JSON
    #: Fetch once for the ETag, then time a conditional request that should be a 304.
    revalidate: bool = False
    #: A retrieval measured as a rate (MiB/s of the response body) rather than a latency.
    rate: bool = False


class Draw:
    """Random choices for one figure: studies without replacement (reshuffled when all
    have been used), so "cold" requests do not hit what the previous one warmed."""

    def __init__(self, catalog: Catalog, rng: random.Random) -> None:
        self.catalog, self.rng = catalog, rng
        self._queue: list[Study] = []
        #: The next CT slice for a cold request (slice 0 is the warm thumbnail's).
        self._unseen = 1

    def study(self) -> Study:
        if not self._queue:
            self._queue = list(self.catalog.studies)
            self.rng.shuffle(self._queue)
        return self._queue.pop()

    def series(self) -> tuple[Study, Series]:
        study = self.study()
        return study, self.rng.choice(study.series)

    def large(self) -> LargeRef:
        if self.catalog.large is None:
            raise Unavailable("no large instance")
        return self.catalog.large

    def viewer(self) -> ViewerStudy:
        if self.catalog.viewer is None:
            raise Unavailable("no viewer study")
        return self.catalog.viewer

    def unseen_ct(self) -> str:
        """A CT slice no earlier request of this figure asked for (never the first slice,
        which the warm thumbnail figure uses): each "cold" request is a first request."""
        ct = self.viewer().ct_instances
        if self._unseen >= len(ct):
            raise Unavailable(f"{len(ct) - 1} slices for cold requests, too few")
        self._unseen += 1
        return ct[self._unseen - 1]


Builder = Callable[[Draw], Read]


def _studies(*params: tuple[str, str]) -> Read:
    return Read("/studies", (*params, ("limit", str(PAGE))))


def _month(draw: Draw) -> Read:
    day = FIRST_DAY.toordinal() + draw.rng.randrange(DAYS)
    first = FIRST_DAY.fromordinal(day).replace(day=1)
    last = first.replace(day=calendar.monthrange(first.year, first.month)[1])
    return _studies(("StudyDate", f"{first:%Y%m%d}-{last:%Y%m%d}"))


def _year(draw: Draw) -> Read:
    year = FIRST_DAY.year + draw.rng.randrange(DAYS // 365)
    return _studies(("StudyDate", f"{year}0101-{year}1231"))


def _name_prefix(draw: Draw) -> Read:
    family = draw.study().patient_name.split("^")[0]
    return _studies(("PatientName", family[:3] + "*"))


def _instance_path(draw: Draw) -> str:
    study, series = draw.series()
    return f"/studies/{study.uid}/series/{series.uid}/instances/{draw.rng.choice(series.instances)}"


def _large_frames(draw: Draw, count: int) -> Read:
    large = draw.large()
    frames = sorted(draw.rng.sample(range(1, large.frames + 1), count))
    path = f"/studies/{large.study}/series/{large.series}/instances/{large.instance}/frames/"
    return Read(path + ",".join(map(str, frames)), accept=ACCEPT_FRAMES)


def _series_instances(draw: Draw) -> Read:
    study, series = draw.series()
    return Read(f"/studies/{study.uid}/series/{series.uid}/instances")


def _series_retrieve(draw: Draw) -> Read:
    study, series = draw.series()
    return Read(f"/studies/{study.uid}/series/{series.uid}", accept=ACCEPT_DICOM, rate=True)


def _series_metadata(draw: Draw, revalidate: bool) -> Read:
    study, series = draw.series()
    return Read(f"/studies/{study.uid}/series/{series.uid}/metadata", revalidate=revalidate)


def _ct_path(viewer: ViewerStudy, instance: str) -> str:
    return f"/studies/{viewer.study}/series/{viewer.ct_series}/instances/{instance}"


def _window() -> tuple[tuple[str, str], ...]:
    center, width = CT_WINDOW
    return (("window", f"{center},{width},linear"),)


def _rendered(draw: Draw, accept: str) -> Read:
    """The slice in the window its header names, asked for explicitly: Orthanc's /rendered
    (DICOMweb plugin 1.7) ignores the instance's window and spreads the whole range of
    values, so without it the two servers would draw different images."""
    viewer = draw.viewer()
    path = _ct_path(viewer, draw.rng.choice(viewer.ct_instances)) + "/rendered"
    return Read(path, _window(), accept=accept)


def _rendered_small(draw: Draw, accept: str) -> Read:
    """A small corpus instance (128 x 128 CT) rendered, in the same explicit window for
    both servers (its header names none, and each server's own default would differ)."""
    return Read(_instance_path(draw) + "/rendered", _window(), accept=accept)


def _thumbnail(viewer: ViewerStudy, instance: str) -> Read:
    return Read(_ct_path(viewer, instance) + "/thumbnail", accept="image/jpeg")


def _j2k_frame(draw: Draw) -> Read:
    viewer = draw.viewer()
    instance = draw.rng.choice(viewer.j2k_instances)
    path = f"/studies/{viewer.study}/series/{viewer.j2k_series}/instances/{instance}/frames/1"
    return Read(path, accept=ACCEPT_DECOMPRESSED)


#: QIDO-RS figures (PS3.18 §10.6), in report order.
QIDO: dict[str, Builder] = {
    "qido.patient_id": lambda d: _studies(("PatientID", d.study().patient_id)),
    "qido.accession": lambda d: _studies(("AccessionNumber", d.study().accession_number)),
    "qido.month": _month,
    "qido.year": _year,
    "qido.name_prefix": _name_prefix,
    "qido.modalities": lambda d: Read(
        "/studies", (("ModalitiesInStudy", d.rng.choice(MODALITIES)), ("limit", "10"))
    ),
    "qido.all": lambda d: Read("/studies", (("limit", str(d.catalog.all_limit)),)),
    "qido.series": lambda d: Read(f"/studies/{d.study().uid}/series"),
    "qido.instances": _series_instances,
    "qido.includefield": lambda d: _studies(("PatientID", d.study().patient_id), ("includefield", "all")),
}

#: WADO-RS figures (PS3.18 §10.4), in report order.
WADO: dict[str, Builder] = {
    "wado.study": lambda d: Read(f"/studies/{d.study().uid}", accept=ACCEPT_DICOM, rate=True),
    "wado.series": _series_retrieve,
    "wado.study_metadata": lambda d: Read(f"/studies/{d.study().uid}/metadata"),
    "wado.study_metadata_304": lambda d: Read(f"/studies/{d.study().uid}/metadata", revalidate=True),
    "wado.series_metadata": lambda d: _series_metadata(d, revalidate=False),
    "wado.series_metadata_304": lambda d: _series_metadata(d, revalidate=True),
    "wado.instance": lambda d: Read(_instance_path(d), accept=ACCEPT_DICOM, rate=True),
    "wado.frame": lambda d: Read(_instance_path(d) + "/frames/1", accept=ACCEPT_FRAMES),
    "wado.rendered": lambda d: _rendered_small(d, "image/jpeg"),
    "wado.rendered_png": lambda d: _rendered_small(d, "image/png"),
    "wado.large_frame": lambda d: _large_frames(d, 1),
    "wado.large_frames": lambda d: _large_frames(d, FRAMES_PER_REQUEST),
}

#: What a viewer asks of the 512 x 512 CT study, in report order: rendered slices (PS3.18
#: §10.4.1.1.3) as JPEG and PNG, thumbnails (§10.4.1.1.6) of slices never asked for before and of one slice
#: asked for again and again, and a JPEG 2000 frame decompressed by the server.
VIEWER: dict[str, Builder] = {
    "view.rendered": lambda d: _rendered(d, "image/jpeg"),
    "view.rendered_png": lambda d: _rendered(d, "image/png"),
    "view.thumbnail_cold": lambda d: _thumbnail(d.viewer(), d.unseen_ct()),
    "view.thumbnail_warm": lambda d: _thumbnail(d.viewer(), d.viewer().ct_instances[0]),
    "view.j2k_frame": _j2k_frame,
}


@dataclass
class Reader:
    """Times one request at a time on a keep-alive client, remembering result counts
    (JSON arrays) or body sizes, so targets can be checked to answer alike. A sample is
    the latency in ms, or for a :attr:`Read.rate` the body's MiB/s (its latency kept in
    :attr:`latencies`)."""

    client: httpx.Client
    target: Target
    sizes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def __call__(self, read: Read) -> float:
        url = self.target.url(*self.target.equivalent(read.path, read.params))
        headers = {"Accept": read.accept}
        if read.revalidate:
            headers["If-None-Match"] = self._etag(url, headers)
        began = time.perf_counter()
        response = self.client.get(url, headers=headers)
        elapsed = time.perf_counter() - began
        if read.revalidate:
            if response.status_code != 304:
                raise Unavailable(f"{response.status_code} to If-None-Match")
        else:
            _expect_success(response)
            self.sizes.append(_size(response))
        self.latencies.append(elapsed * 1000)
        if read.rate:
            return len(response.content) / MIB / elapsed
        return elapsed * 1000

    def _etag(self, url: str, headers: dict[str, str]) -> str:
        response = self.client.get(url, headers=headers)
        _expect_success(response)
        etag: str | None = response.headers.get("etag")
        if etag is None:
            raise Unavailable("no ETag")
        return etag


def _expect_success(response: httpx.Response) -> None:
    # A missing feature (404, 406) or a failure is that figure's n/a, never the run's end.
    if response.status_code != 200:
        raise Unavailable(str(response.status_code))


def _size(response: httpx.Response) -> int:
    if response.headers.get("content-type", "").startswith(("application/dicom+json", "application/json")):
        return len(response.json())
    return len(response.content)


def measure_ping(target: Target, plan: Plan) -> Measurement:
    """The round trip to the server's health check: what any request costs at least."""
    if target.ping is None:
        return Measurement(unavailable="n/a (no health check)")
    url = target.ping
    with target.client() as client:

        def probe(_: int) -> float:
            began = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - began
            _expect_success(response)
            return elapsed * 1000

        measurement = repeat(plan, probe)
    print(f"  {target.name:<14} {'http.ping':<26} {brief(measurement)}", flush=True)
    return measurement


def measure_reads(
    target: Target, figures: dict[str, Builder], catalog: Catalog, plan: Plan, seed: int
) -> dict[str, Measurement]:
    """Every figure of ``figures`` on ``target``, one after the other."""
    results = {}
    with target.client() as client:
        for key, build in figures.items():
            # Seeded per figure: every target gets the same requests (not a secret).
            draw = Draw(catalog, random.Random(f"{seed}:{key}"))  # noqa: S311
            try:
                reads = [build(draw) for _ in range(plan.runs)]
            except Unavailable as unavailable:
                results[key] = Measurement(unavailable=f"n/a ({unavailable.reason})")
                continue
            reader = Reader(client, target)
            measurement = repeat(plan, lambda index: reader(reads[index]))  # noqa: B023
            if reader.sizes and measurement.samples:
                # Results per search (or bytes per retrieval) of the measured requests.
                measurement.detail["sizes"] = reader.sizes[-len(measurement.samples) :]
                if reads[0].rate:
                    measurement.detail["ms"] = reader.latencies[-len(measurement.samples) :]
            results[key] = measurement
            unit = "MiB/s" if reads[0].rate else "ms"
            print(f"  {target.name:<14} {key:<26} {brief(measurement, unit)}", flush=True)
    return results


def brief(measurement: Measurement, unit: str = "ms") -> str:
    if measurement.median is None:
        return measurement.unavailable or "n/a"
    return f"median {measurement.median:8.2f} {unit} over {len(measurement.samples)}"
