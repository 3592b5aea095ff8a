"""Owner notices of a share: when it is first opened, and when its access is locked out
after failed attempts, the address given at its creation (``notify_email``) is told.

A notice is claimed in the database first (one UPDATE, so one worker sends it), then
sent in the background after that change has committed: the recipient's request neither
waits for the mail server nor fails with it. A notice that cannot be sent is logged by
share id and exception type only — no address, no patient data, no secret.
"""

from __future__ import annotations

import asyncio
import logging

from app.repository import share_notices as repository
from app.repository import shares as share_rows
from app.repository.shares import ShareRow
from app.services import mail
from app.services.archive import Archive
from app.services.mail import Letter

log = logging.getLogger(__name__)


class Notices:
    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._sending: set[asyncio.Task[None]] = set()

    async def opened(self, share_id: str) -> None:
        """A use of the share was taken: tell its owner if it was the first."""
        try:
            claimed = await repository.claim_first_open(self.archive.pool, share_id)
        except Exception as exc:  # never the recipient's failure
            log.warning("first-open notice of share %s not claimed: %s", share_id, type(exc).__name__)
            return
        if claimed:
            address, recipient = claimed
            text = (
                f"Share {share_id}{_for(recipient)} was opened for the first time.\n\n"
                "You asked to be told. If this was not expected, revoke the share in the console.\n"
            )
            self._later(share_id, Letter(address, f"Share {share_id} was opened", text))

    async def failed(self, share: ShareRow, client: str | None) -> None:
        """A challenge answer failed: tell the owner if the share is now locked out."""
        s = self.archive.settings
        try:
            per_share, _ = await share_rows.failures(
                self.archive.pool, share.id, client, s.share_failure_window
            )
            if per_share < s.share_failures_per_share:
                return
            address = await repository.claim_lockout(self.archive.pool, share.id, s.share_failure_window)
        except Exception as exc:  # never the recipient's failure
            log.warning("lockout notice of share %s not claimed: %s", share.id, type(exc).__name__)
            return
        if address:
            minutes = max(1, s.share_failure_window // 60)
            text = (
                f"Share {share.id}{_for(share.recipient)} was locked out after {per_share} wrong answers "
                f"to its challenge; it cannot be opened for about {minutes} minutes.\n\n"
                "If these attempts were not your recipient's, revoke the share in the console.\n"
            )
            self._later(share.id, Letter(address, f"Share {share.id} was locked out", text))

    def _later(self, share_id: str, letter: Letter) -> None:
        task = asyncio.create_task(self._send(share_id, letter))
        self._sending.add(task)  # held, or the loop may drop it half-way
        task.add_done_callback(self._sending.discard)

    async def _send(self, share_id: str, letter: Letter) -> None:
        try:
            await mail.send(self.archive.settings, letter)
        except Exception as exc:
            log.warning("owner notice of share %s not sent: %s", share_id, type(exc).__name__)

    async def drain(self) -> None:
        """Let notices under way finish (at shutdown, before the pool closes)."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=self.archive.settings.smtp_timeout)


def _for(recipient: str | None) -> str:
    return f" (for {recipient})" if recipient else ""
