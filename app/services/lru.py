"""Small in-memory caches bounded by the total size of what they hold."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class Lru(Generic[V]):
    """Least recently used entries go first once ``max_bytes`` would be exceeded; each
    entry's size is given when it is put (an estimate, for values that are not bytes).

    >>> cache: Lru[str] = Lru(10)
    >>> cache.put("a", "x", 6); cache.put("b", "y", 6); cache.get("a") is None, cache.get("b")
    (True, 'y')
    >>> cache.put("c", "z", 11); cache.get("c") is None
    True
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._size = 0
        # Rendering threads and the event loop both use a cache.
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, value: V, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= old[1] if old is not None else 0
            self._entries[key] = (value, size)
            self._size += size
            while self._size > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._size -= evicted

    def __len__(self) -> int:
        return len(self._entries)


class LruBytes(Lru[bytes]):
    """:class:`Lru` of byte strings, each counted by its length.

    >>> cache = LruBytes(10)
    >>> cache.put("a", b"12345"); cache.put("b", b"12345"); cache.get("a")
    b'12345'
    >>> cache.put("c", b"123"); cache.get("b") is None, cache.get("a"), cache.get("c")
    (True, b'12345', b'123')
    """

    def put(self, key: str, value: bytes, size: int | None = None) -> None:
        super().put(key, value, len(value) if size is None else size)
