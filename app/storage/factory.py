"""Choose and open the configured object store."""

from __future__ import annotations

import asyncio
import contextlib

from app.errors import StorageUnavailable
from app.settings import Settings
from app.storage.base import BlobStore
from app.storage.filesystem import FilesystemStore
from app.storage.s3 import S3Store

__all__ = ["open_store"]


async def open_store(settings: Settings, stack: contextlib.AsyncExitStack) -> BlobStore:
    """The S3 store when ``settings.s3_bucket`` is set (an unset endpoint means AWS), else
    a filesystem store under ``data_dir/objects``. Whatever it opens is closed by ``stack``."""
    if settings.s3_bucket is not None:
        return await S3Store.connect(settings, stack)
    root = settings.data_dir / "objects"
    try:
        # The store itself never creates its root (see FilesystemStore), so do it here,
        # once, where a missing directory simply means a first start.
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailable(
            "the object store is unavailable", f"object store: cannot create {root}: {exc}"
        ) from exc
    store = FilesystemStore(root)
    stack.push_async_callback(store.close)
    return store
