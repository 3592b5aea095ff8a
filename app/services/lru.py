"""A small in-memory cache of byte strings, bounded by their total size."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LruBytes:
    """Least recently used entries go first once ``max_bytes`` would be exceeded.

    >>> cache = LruBytes(10)
    >>> cache.put("a", b"12345"); cache.put("b", b"12345"); cache.get("a")
    b'12345'
    >>> cache.put("c", b"123"); cache.get("b") is None, cache.get("a"), cache.get("c")
    (True, b'12345', b'123')
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._entries[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)
