"""Claims on a share's owner notices: each UPDATE succeeds for one caller only, so the
notice is sent once however many workers see the event at the same time."""

from __future__ import annotations

from app.repository.database import Pool, connection

# The first open happens once; the owner is told only if they gave an address.
CLAIM_FIRST_OPEN = """
UPDATE shares SET first_opened_at = now()
WHERE id = $1 AND first_opened_at IS NULL
RETURNING notify_email, recipient"""
# A lockout lasts the failure window; one notice per window at most.
CLAIM_LOCKOUT = """
UPDATE shares SET lockout_noticed_at = now()
WHERE id = $1 AND notify_email IS NOT NULL
  AND (lockout_noticed_at IS NULL OR lockout_noticed_at < now() - make_interval(secs => $2))
RETURNING notify_email"""


async def claim_first_open(pool: Pool, share_id: str) -> tuple[str, str | None] | None:
    """The owner's address (and the share's recipient) if this is the share's first open
    and they gave one."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(CLAIM_FIRST_OPEN, share_id)
    return (row["notify_email"], row["recipient"]) if row and row["notify_email"] else None


async def claim_lockout(pool: Pool, share_id: str, window: int) -> str | None:
    """The owner's address if no lockout notice went out in the last ``window`` seconds."""
    async with connection(pool) as conn:
        address: str | None = await conn.fetchval(CLAIM_LOCKOUT, share_id, window)
    return address
