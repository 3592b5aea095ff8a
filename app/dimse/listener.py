"""The DICOM listener (PS3.8 upper layer, PS3.7 DIMSE) that ``filmless serve`` runs next to
HTTP: one pynetdicom Application Entity, its presentation contexts, its limits.

With several worker processes (``FILMLESS_WORKERS``) every worker listens on the DICOM
port, bound with ``SO_REUSEPORT``: the kernel (Linux ≥ 3.9) spreads incoming associations
over the workers, as it spreads HTTP connections over uvicorn's, so C-STOREs from several
modalities use every core instead of one worker's event loop. Each worker takes its share
of ``FILMLESS_DICOM_MAX_ASSOCIATIONS``. Where the platform has no ``SO_REUSEPORT`` (or
will not share the port), the first worker to bind listens and the others retry every few
seconds, so when the listening worker dies another takes the port over; the port is then
the arbiter, a resource of the host — which is the scope the choice must have, as two
archive nodes on two hosts share one database and must both listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import logging
import math
import socket
import ssl
import threading
from typing import Any, cast

from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from app.dimse.handlers import Bridge, Handlers
from app.services.archive import Archive
from app.settings import Settings

log = logging.getLogger(__name__)

#: PS3.5 Annex A transfer syntaxes.
UNCOMPRESSED = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian (the default, PS3.5 §10.1)
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
]
#: Accepted for storage and stored as sent (never transcoded on the way in).
STORAGE_TRANSFER_SYNTAXES = [
    *UNCOMPRESSED,
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
#: The Query/Retrieve information models (PS3.4 C.6.1, C.6.2).
QUERY_RETRIEVE = [
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
]
#: How often a worker that could not bind the DICOM port tries again, in seconds.
RETRY_SECONDS = 5.0
#: Whether workers can share the DICOM port (Linux, the BSDs).
SHARED_PORT = hasattr(socket, "SO_REUSEPORT")


class SharedPortServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, bound with ``SO_REUSEPORT`` so that every worker
    process of one archive node can listen on the same DICOM port (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.contexts = _Contexts(self.contexts)

    def server_bind(self) -> None:
        if SHARED_PORT:
            sock = cast(socket.socket, self.socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def service_actions(self) -> None:
        """Nothing between polls of the listening socket. pynetdicom's own runs a full
        ``gc.collect()`` every 60 polls (every 30 s, idle or not) to free finished
        association threads sooner; in the archive's process that holds the interpreter
        lock — and every HTTP request waiting on it — for as long as a full collection
        of its heap takes, and the interpreter's collector frees them anyway."""


class _Contexts(list[PresentationContext]):
    """The presentation contexts the listener supports, which pynetdicom deep-copies for
    every association it accepts, to negotiate on copies of its own. Deep-copying a few
    hundred contexts, each UID a ``str`` subclass reconstructed one by one, cost more CPU
    than a C-STORE; each copy here is the context with its own list of the same,
    immutable, transfer syntax UIDs: everything negotiation may change."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            twin = copy.copy(context)
            twin._transfer_syntax = list(context._transfer_syntax)
            copies.append(twin)
        return copies


def application_entity(settings: Settings) -> AE:
    """The archive's AE: its title, limits and the presentation contexts it accepts."""
    # Received data sets are written to a temporary file as they arrive, never held whole
    # in memory (pynetdicom's chunked receive), and stored from there.
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = AE(settings.dicom_ae_title)
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.connection_timeout = settings.dicom_connection_timeout
    ae.maximum_pdu_size = settings.dicom_max_pdu_size
    # Beyond this, an A-ASSOCIATE-RJ "local limit exceeded" (PS3.8 §9.3.4). Every worker
    # listens (see the module doc) and takes its share of the node's limit.
    workers = settings.workers if SHARED_PORT else 1
    ae.maximum_associations = math.ceil(settings.dicom_max_associations / workers)
    # Any Called AE title is answered (modalities are often configured loosely); the
    # calling AE title is what is checked, against the known AEs.
    ae.require_called_aet = False
    ae.add_supported_context(Verification, UNCOMPRESSED)
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        # Both roles: a peer storing (SCU), and a C-GET's requestor taking the SCP role
        # for the instances sent back (PS3.7 D.3.3.4, PS3.4 C.4.3).
        ae.add_supported_context(cx.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for uid in QUERY_RETRIEVE:
        ae.add_supported_context(uid, UNCOMPRESSED)
    ae.add_supported_context(StorageCommitmentPushModel, UNCOMPRESSED)
    return ae


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """DICOM TLS (PS3.15 Annex B, BCP 195): TLS 1.2 or later, the configured certificate;
    with a CA file, peers must present a certificate it signed."""
    if settings.dicom_tls_cert_file is None and settings.dicom_tls_key_file is None:
        return None
    if settings.dicom_tls_cert_file is None or settings.dicom_tls_key_file is None:
        raise ValueError("DICOM TLS needs both FILMLESS_DICOM_TLS_CERT_FILE and FILMLESS_DICOM_TLS_KEY_FILE")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.dicom_tls_cert_file, settings.dicom_tls_key_file)
    if settings.dicom_tls_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(settings.dicom_tls_ca_file)
    return context


class Listener:
    """A running listener; :meth:`stop` ends it (aborting open associations)."""

    def __init__(self, ae: AE, server: ThreadedAssociationServer, handlers: Handlers) -> None:
        self.ae = ae
        self.server = server
        self.handlers = handlers

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @classmethod
    def start(cls, archive: Archive, loop: asyncio.AbstractEventLoop) -> Listener:
        """Bind and serve (blocking only while binding): OSError when the port is taken."""
        settings = archive.settings
        ae = application_entity(settings)
        handlers = Handlers(Bridge(archive, loop))
        bindings: list[Any] = [
            (evt.EVT_REQUESTED, handlers.on_requested),
            (evt.EVT_ABORTED, handlers.on_closed),
            (evt.EVT_CONN_CLOSE, handlers.on_closed),
            (evt.EVT_C_ECHO, handlers.on_echo),
            (evt.EVT_C_STORE, handlers.on_store),
            (evt.EVT_C_FIND, handlers.on_find),
            (evt.EVT_C_MOVE, handlers.on_move),
            (evt.EVT_C_GET, handlers.on_get),
            (evt.EVT_N_ACTION, handlers.on_n_action),
        ]
        host = settings.dicom_host or settings.host
        # ae.start_server(block=False), with the server class that shares the port.
        server = ae.make_server(
            (host, settings.dicom_port),
            evt_handlers=bindings,
            ssl_context=tls_context(settings),
            server_class=SharedPortServer,
        )
        threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True).start()
        ae._servers.append(server)  # so that ae.shutdown() stops it
        listener = cls(ae, server, handlers)
        log.info(
            "DICOM listener: AE title %s on %s:%d%s", settings.dicom_ae_title, host, listener.port,
            " (TLS)" if server.ssl_context else "",
        )  # fmt: skip
        if settings.dicom_accept_unknown_hospital:
            log.warning(
                "DEVELOPMENT ONLY: unknown calling AE titles are accepted into hospital %s "
                "(FILMLESS_DICOM_ACCEPT_UNKNOWN_HOSPITAL); never set this in production",
                settings.dicom_accept_unknown_hospital,
            )
        return listener

    async def stop(self) -> None:
        """Stop listening and abort the associations, then let the C-STOREs being stored
        finish, while the database is still there."""
        await asyncio.to_thread(self.ae.shutdown)
        await self.handlers.stores.close()


async def listen(archive: Archive, stack: contextlib.AsyncExitStack) -> None:
    """Start the DICOM listener for the application's lifetime, unless the port is 0."""
    settings = archive.settings
    if settings.dicom_port == 0:
        return
    # pynetdicom logs each message it handles; the archive logs its own events without
    # patient data (and at DEBUG pynetdicom would print whole identifiers).
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    if settings.workers == 1:
        # A single process must have its port: failing to bind fails the start.
        listener = await asyncio.to_thread(Listener.start, archive, loop)
        stack.push_async_callback(listener.stop)
        return
    task = asyncio.create_task(_take_port_over(archive, loop))

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(cancel)


async def _take_port_over(archive: Archive, loop: asyncio.AbstractEventLoop) -> None:
    """One of several workers: listen once the DICOM port is free (see the module doc)."""
    told = False
    while True:
        try:
            listener = await asyncio.to_thread(Listener.start, archive, loop)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                log.exception("the DICOM listener could not start")
            elif not told:
                log.info("DICOM port %d is taken (another worker listens); this worker stands by",
                         archive.settings.dicom_port)  # fmt: skip
                told = True
            await asyncio.sleep(RETRY_SECONDS)
            continue
        try:
            await asyncio.Event().wait()
        finally:
            await listener.stop()
