"""The archives a run measures: Filmless, and optionally Orthanc at ``ORTHANC_URL``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench.corpus import PATIENT_ID_PREFIX
from bench.dimse import DicomPeer
from bench.process import pid_listening_on

FILMLESS, ORTHANC, NGINX = "Filmless", "Orthanc", "nginx"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
REQUEST_TIMEOUT = 600.0


@dataclass(frozen=True)
class Target:
    name: str
    #: The DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
    root: str
    #: The server process, when it runs here: its memory is watched during large STOWs.
    pid: int | None
    #: The server's cheapest endpoint (a health check): the floor under every figure.
    ping: str | None = None
    #: Send query values as they are instead of percent-encoded: Orthanc (1.10, DICOMweb
    #: plugin 1.7) does not decode them, so ``%2A`` would be matched as literal text.
    literal_queries: bool = False
    #: Sent with every request (credentials, when a target requires them).
    headers: dict[str, str] = field(default_factory=dict)
    #: Ask for a thumbnail as a rendered image scaled to fit this viewport: Orthanc's
    #: DICOMweb plugin (1.7) has no ``/thumbnail`` but honours ``viewport`` on ``/rendered``.
    thumbnail_viewport: str | None = None
    #: Its DICOM listener, for the C-STORE figure.
    dicom: DicomPeer | None = None
    #: Maps a DICOMweb path to the path this target serves it at (nginx's static files).
    rewrite: Callable[[str], str] | None = None

    def client(self) -> httpx.Client:
        """A keep-alive client for this target; generous timeouts, as a slow answer is a
        figure to report rather than an error."""
        return httpx.Client(headers=self.headers, timeout=REQUEST_TIMEOUT)

    def equivalent(
        self, path: str, params: Sequence[tuple[str, str]] = ()
    ) -> tuple[str, Sequence[tuple[str, str]]]:
        """The request this target serves for ``path``: its own form of a thumbnail.

        >>> Target("t", "r", None, thumbnail_viewport="128,128").equivalent("/s/1/thumbnail")
        ('/s/1/rendered', (('viewport', '128,128'),))
        """
        if self.thumbnail_viewport and path.endswith("/thumbnail"):
            path = path.removesuffix("/thumbnail") + "/rendered"
            params = (*params, ("viewport", self.thumbnail_viewport))
        if self.rewrite is not None:
            path = self.rewrite(path)
        return path, params

    def url(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """``root + path`` with the query string built for this target."""
        if not params:
            return self.root + path
        if self.literal_queries:
            query = "&".join(f"{key}={value}" for key, value in params)
        else:
            query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        return f"{self.root}{path}?{query}"


def orthanc_target(url: str, dicom: DicomPeer | None = None) -> Target:
    """Orthanc at ``url``: its base (``http://host:8042``) or its DICOMweb root, and its
    DICOM listener ``dicom``."""
    base = orthanc_base(url)
    parts = urllib.parse.urlsplit(base)
    pid = pid_listening_on(parts.port or 80) if parts.hostname in LOOPBACK else None
    return Target(
        ORTHANC,
        base + "/dicom-web",
        pid,
        ping=base + "/system",
        literal_queries=True,
        # A thumbnail is at most 128 pixels wide and high (as Filmless's).
        thumbnail_viewport="128,128",
        dicom=dicom,
    )


def orthanc_base(url: str) -> str:
    """
    >>> orthanc_base("http://127.0.0.1:8042/dicom-web/"), orthanc_base("http://h:8042")
    ('http://127.0.0.1:8042', 'http://h:8042')
    """
    base = url.rstrip("/")
    return base.removesuffix("/dicom-web")


def clear_orthanc_corpus(client: httpx.Client, base: str) -> int:
    """Delete every study a benchmark run stored in Orthanc (found by the corpus's
    PatientID prefix) through its REST API; returns how many were deleted."""
    response = client.post(
        f"{base}/tools/find",
        json={"Level": "Study", "Query": {"PatientID": f"{PATIENT_ID_PREFIX}*"}},
    )
    response.raise_for_status()
    studies: list[str] = response.json()
    for orthanc_id in studies:
        client.delete(f"{base}/studies/{orthanc_id}").raise_for_status()
    return len(studies)
