"""A seeded, bounded fuzz test of the request surface: whatever a hostile or careless
client sends, the answer is a documented refusal (4xx) or a success — never a 5xx, never a
response that breaks off. Set ``FILMLESS_FUZZ_SEED`` to replay or widen a run; a failure
names the seed and the request."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.fixtures import ArchiveUnderTest
from tests.mutations import stow_request
from tests.samples import Sample, make_sample, multipart_body

pytestmark = [
    pytest.mark.parametrize("backend", ["filesystem"], indirect=True),
    # pydicom warns about each value it cannot make sense of in a corrupted file (and the
    # suite turns warnings into errors); the server logs them and goes on.
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SEED = int(os.environ.get("FILMLESS_FUZZ_SEED", "20261202"))
#: Requests per generator: enough to cover each generator's choices several times,
#: few enough for every ``make test``.
COUNT = int(os.environ.get("FILMLESS_FUZZ_COUNT", "120"))

NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "%",
    "%00",
    "*",
    "?",
    "**",
    "\\",
    "\\\\",
    ",",
    ",,",
    "-",
    "--",
    "=",
    "&",
    "é",
    "Müller^Jürgen",
    "日本^太郎",
    "\u202e",
    "\ufeff",
    "😀",
    "²",
    "٣",
    "1e309",
    "NaN",
    "inf",
    "-0",
    "9" * 40,
    "9" * 5000,
    str(1 << 64),
    str(-(1 << 63)),
    "0x10",
    "1.2.3",
    "1." * 40,
    "..",
    "../..",
    "/",
    "20200101-",
    "-20200101",
    "20200101-20191231",
    "2020-01-01",
    "99999999",
    "000000",
    "2359",
    "25",
    "A" * 8000,
    "true",
    "false",
    "all",
    "00100010",
    "0010,0010",
    "(0010,0010)",
    "PatientName.x",
]
QIDO_NAMES = [
    "PatientName", "PatientID", "00100020", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SeriesNumber", "InstanceNumber",
    "includefield", "limit", "offset", "fuzzymatching", "Unknown", "0010001G", "7FE00010", "", "\x00",
    "RequestAttributesSequence.ScheduledProcedureStepID", "PatientBirthDate", "IssuerOfPatientID",
]  # fmt: skip
ACCEPTS = [
    "*/*", "", ",", ";", "application/dicom", "application/dicom; transfer-syntax=*",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.1", "application/dicom; transfer-syntax=9.9",
    'multipart/related; type="application/dicom"; transfer-syntax=*', "multipart/related",
    "multipart/related; type=application/octet-stream", "multipart/related; type=image/jpeg",
    "application/octet-stream; transfer-syntax=*", "image/jpeg;q=abc", "image/png;q=2", "image/gif;q=0",
    "image/*", "text/html", "application/dicom+json", "application/json;q=0.5, */*;q=0.1",
    'multipart/related; type="application/dicom"; transfer-syntax="', "a/b/c", "image/jpeg;" * 200,
]  # fmt: skip
RENDER_NAMES = ["window", "viewport", "quality", "annotation", "accept", "charset", "iccprofile"]
URI_NAMES = [
    "windowCenter", "windowWidth", "rows", "columns", "region", "frameNumber", "imageQuality",
    "contentType", "transferSyntax", "annotation", "anonymize", "charset",
]  # fmt: skip
NUMBERISH = ["1", "0", "-1", "64", "4096", "4097", "1,1", "40,400", "40,400,sigmoid", "40,0,linear",
             "256,256,0,0,10,10", "256,256,-1,0,5,5", "1,1,,,,", "0,0,1,1", "0.1,0.1,0.9,0.9", "1e3",
             "128,128,0,0,-128,-128", "image/png", "application/dicom", "1.2.840.10008.1.2.4.50"]  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def corpus(served: ArchiveUnderTest) -> list[Sample]:
    samples = [make_sample(name) for name in ("ct", "multiframe", "jpeg", "rgb", "rle")]
    body, ctype = multipart_body(s.data for s in samples)
    response = await served.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return samples


def _paths(s: Sample) -> list[str]:
    instance = f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.instance}"
    return [
        "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances", f"/dicom-web/studies/{s.study}",
        f"/dicom-web/studies/{s.study}/series", f"/dicom-web/studies/{s.study}/metadata", instance,
        f"{instance}/metadata", f"{instance}/frames/1", f"{instance}/rendered", f"{instance}/thumbnail",
        f"{instance}/frames/1/rendered", f"{instance}/bulkdata/7FE00010",
        f"/dicom-web/studies/{s.study}/series/{s.series}/rendered", f"/dicom-web/studies/{s.study}/thumbnail",
    ]  # fmt: skip


Request = tuple[str, str, dict[str, Any]]


def _qido(rng: random.Random, samples: list[Sample]) -> Request:
    path = rng.choice(["/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances",
                       f"/dicom-web/studies/{samples[0].study}/series"])  # fmt: skip
    params = [(rng.choice(QIDO_NAMES), rng.choice(NASTY)) for _ in range(rng.randint(1, 4))]
    return "GET", path, {"params": params}


def _segments(rng: random.Random, samples: list[Sample]) -> Request:
    parts = rng.choice(_paths(rng.choice(samples))).split("/")
    index = rng.randrange(2, len(parts))
    parts[index] = rng.choice([*NASTY[:60], "1" * 65, "1.2.3.4", "01.2", "1..2", "%2e%2e", "frames"])
    return "GET", "/".join(parts).replace("\x00", "%00"), {}


def _accepts(rng: random.Random, samples: list[Sample]) -> Request:
    accept = ", ".join(rng.choice(ACCEPTS) for _ in range(rng.randint(1, 3)))
    return "GET", rng.choice(_paths(rng.choice(samples))), {"headers": {"Accept": accept}}


def _rendered(rng: random.Random, samples: list[Sample]) -> Request:
    s = rng.choice(samples)
    params = [
        (rng.choice(RENDER_NAMES), rng.choice(NUMBERISH + NASTY[:40])) for _ in range(rng.randint(1, 3))
    ]
    path = rng.choice([p for p in _paths(s) if p.endswith(("rendered", "thumbnail"))])
    return "GET", path, {"params": params}


def _wado_uri(rng: random.Random, samples: list[Sample]) -> Request:
    s = rng.choice(samples)
    params = [("requestType", rng.choice(["WADO", "WADO", "wado", ""])), ("studyUID", s.study),
              ("seriesUID", s.series), ("objectUID", s.instance)]  # fmt: skip
    rng.shuffle(params)
    params = params[: rng.randint(2, 4)] if rng.random() < 0.2 else params
    params += [(rng.choice(URI_NAMES), rng.choice(NUMBERISH + NASTY[:40])) for _ in range(rng.randint(0, 3))]
    return "GET", "/wado", {"params": params}


def _stow(rng: random.Random, samples: list[Sample]) -> Request:
    path, body, ctype = stow_request(rng, [s.study for s in samples])
    return "POST", path, {"content": body, "headers": {"Content-Type": ctype}}


def _api(rng: random.Random, samples: list[Sample]) -> Request:
    path = rng.choice(["/api/audit", "/api/shares", "/api/hospitals"])
    names = {"/api/audit": ["patient", "study", "subject", "share", "since", "until", "limit", "offset",
                            "format"],
             "/api/shares": ["study", "patient", "creator", "state", "limit", "offset"],
             "/api/hospitals": ["x"]}[path]  # fmt: skip
    params = [(rng.choice(names), rng.choice(NASTY)) for _ in range(rng.randint(1, 3))]
    return "GET", path, {"params": params}


def _share_create(rng: random.Random, samples: list[Sample]) -> Request:
    body: dict[str, Any] = {
        "studies": rng.choice([[samples[0].study], [], ["\x00"], ["1" * 70], [rng.choice(NASTY)], "x", None]),
        "expires_at": rng.choice(["2026-12-31T00:00:00Z", "\x00", "9999-99-99", None, 1 << 70, "2026-12-03"]),
        "permissions": rng.choice([["view"], ["fly"], [], "view", [None]]),
        "recipient": rng.choice(["Dr. X", "\x00", "A" * 5000, None, 7, "😀"]),
        "challenge": rng.choice([None, "birthdate", "pin", "\x00", "x"]),
        "pin": rng.choice([None, "1234", "\x00", "9" * 5000, "²²²²"]),
        "max_uses": rng.choice([None, 1, 0, -1, 1 << 70, "x"]),
    }
    body = {k: v for k, v in body.items() if v is not None or rng.random() < 0.3}
    return "POST", "/api/shares", {"json": body}


GENERATORS: list[Callable[[random.Random, list[Sample]], Request]] = [
    _qido, _segments, _accepts, _rendered, _wado_uri, _stow, _api, _share_create,
]  # fmt: skip


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__.strip("_"))
async def test_no_request_gets_a_5xx(served: ArchiveUnderTest, corpus: list[Sample], generator: Any):
    rng = random.Random(f"{SEED}-{generator.__name__}")  # noqa: S311 (reproducible, not secret)
    statuses: dict[int, int] = {}
    for n in range(COUNT):
        method, path, kwargs = generator(rng, corpus)
        try:
            # The whole body is read: a response that breaks off raises here.
            response = await served.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            pytest.fail(
                f"seed {SEED}, {generator.__name__} #{n}: {method} {path[:200]} {_brief(kwargs)}: {exc!r}"
            )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (
            f"seed {SEED}, {generator.__name__} #{n}: {method} {path[:200]} {_brief(kwargs)} -> "
            f"{response.status_code} {response.text[:300]}"
        )
        if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
            assert response.json().get("message"), (path[:200], response.text[:200])
    # Not vacuous: the run reached both the archive's refusals and its successes.
    assert any(400 <= s < 500 for s in statuses), statuses
    # The server is still up and serving.
    assert (await served.client.get("/dicom-web/studies")).status_code == 200


def _brief(kwargs: dict[str, Any]) -> str:
    shown = {k: (v[:200] if isinstance(v, bytes | str) else v) for k, v in kwargs.items() if k != "content"}
    return repr(shown)[:400]
