"""What the application holds for its lifetime, built by the lifespan and read by the
dependencies in :mod:`app.http.deps`.

A service that records its audit takes the Archive whole: the trail's commit needs the
pool, the sink's settings and its lock. A function that needs one part of it (the store
to stream from, the settings of an upload, the pool) takes that part, so its signature
says what it touches."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

from app.dicom.pixel_source import PixelSource
from app.repository.database import Pool
from app.repository.invalidation import Invalidations
from app.services.audit_writer import AuditWriter
from app.services.budget import MemoryBudget
from app.services.followups import FollowUps
from app.services.lru import Lru, LruBytes
from app.settings import Settings
from app.storage.base import BlobStore


@dataclass(frozen=True)
class Archive:
    settings: Settings
    pool: Pool
    store: BlobStore
    #: Where pixel decoding and rendering run: off the event loop, and bounded, so a
    #: 4096x4096 image cannot hold up other requests.
    renderer: Executor
    #: Recently served thumbnails, by object key: a study list asks for the same ones again
    #: and again. Safe on several nodes by construction, so not invalidated: a key is random,
    #: never reused, and names immutable content, and a thumbnail of a deleted instance is
    #: never looked up (the request finds no index row and is refused before).
    thumbnails: LruBytes
    #: The memory decoding and rendering may take at once (FILMLESS_RENDER_MEMORY).
    render_budget: MemoryBudget
    #: Notices from every process on the database that a cached value changed.
    invalidations: Invalidations
    #: The audit trail's write-behind queue of read events, and the audit sink.
    audit: AuditWriter
    #: What decoding and rendering derive from an instance's metadata, by object key
    #: (app.services.pixel_sources). Not invalidated, for the reasons the thumbnails are not:
    #: an entry is only looked up with a key the request has just read from the index row it
    #: found and authorised, so a deleted or replaced instance's entry is never used again.
    pixel_sources: Lru[PixelSource] = field(default_factory=lambda: Lru(PIXEL_SOURCES_BYTES))
    #: What requests leave to do after answering (saving a rendered thumbnail).
    followups: FollowUps = field(default_factory=FollowUps)


#: Memory for :attr:`Archive.pixel_sources`, per process: a few KiB per instance, so tens of
#: thousands of instances; LUT values and per-frame groups count in full.
PIXEL_SOURCES_BYTES = 32 << 20
