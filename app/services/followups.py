"""Work a response need not wait for, run on the event loop after it is answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class FollowUps:
    """Tasks a request leaves behind (saving a thumbnail it rendered), at most ``limit``
    at once: beyond that the request does the work itself before answering, so a burst
    cannot pile up unbounded work. :meth:`close` waits for them, at shutdown, while the
    object store and the database are still open."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, work: Coroutine[Any, Any, None]) -> None:
        if len(self._tasks) >= self._limit:
            await _logged(work)
            return
        task = asyncio.create_task(_logged(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for the follow-ups started so far."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.settled()


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception:
        # Follow-ups keep what can be derived again; losing one costs a re-render.
        log.warning("a follow-up of a request failed", exc_info=True)
