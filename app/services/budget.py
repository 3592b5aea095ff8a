"""A bound on the memory that decoding and rendering take at once in one process.

Each job (rendering a frame, decoding one for transcoding) reserves what it will hold,
estimated from the image's size before any pixel is read; a job that does not fit waits
for others to finish, and after a while is refused with 503, so a burst of large
renderings queues instead of exhausting the machine's memory. Threads are bounded
separately, by the renderer pool's size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.errors import ServiceBusy


class MemoryBudget:
    def __init__(self, total: int, wait: float) -> None:
        self.total = total
        self.wait = wait
        self.free = total
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        """Hold ``amount`` bytes of the budget for the block."""
        if amount > self.total:
            raise ServiceBusy(
                f"this image needs about {amount >> 20} MiB to render, more than the "
                f"{self.total >> 20} MiB the archive allows (FILMLESS_RENDER_MEMORY)"
            )
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.free >= amount), self.wait)
            except TimeoutError:
                raise ServiceBusy("the archive is busy rendering other images; retry shortly") from None
            self.free -= amount
        try:
            yield
        finally:
            # Shielded: a cancelled request must still give its share back.
            await asyncio.shield(self._release(amount))

    async def _release(self, amount: int) -> None:
        async with self._changed:
            self.free += amount
            self._changed.notify_all()


def decoding_memory(rows: int | None, columns: int | None, samples: int | None, bits: int | None) -> int:
    """What decoding one frame holds: the compressed input, the decoder's output and the
    native copy made of it, each at most the decoded size.

    >>> decoding_memory(512, 512, 1, 16) / (1 << 20)
    1.5
    """
    return 3 * (rows or 1) * (columns or 1) * (samples or 1) * max(1, ((bits or 16) + 7) // 8)
