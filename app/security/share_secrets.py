"""The secrets of share links: the link's token, the human-typable access code, and the
answer to a challenge — generated here, stored only as keyed hashes.

The token carries 192 random bits: unguessable. The access code is 12 characters of
Crockford's base32 (60 bits, printed as ``XXXX-XXXX-XXXX``): typed by a person, so shorter,
and made safe by lockout (a handful of failures per share and per client address in 15
minutes): an attacker gets a few hundred guesses a day at a space of 2^60. Hashes are keyed
with the archive's secret (HMAC-SHA-256), so a copy of the database alone does not let
anyone test guesses offline — which a short code or a birth date would not survive.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Letters people confuse, read as Crockford defines (I, L -> 1; O -> 0).
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0", "U": "V"})


def new_token() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


def new_share_id() -> str:
    return "sh-" + secrets.token_hex(8)


def new_access_code() -> str:
    raw = "".join(secrets.choice(_CROCKFORD) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def normalize_code(typed: str) -> str | None:
    """The code as generated, from what a person typed (case, spaces, dashes, confusable
    letters forgiven); None when it cannot be a code.

    >>> normalize_code(" abcd efgh-jkmo "), normalize_code("too short")
    ('ABCD-EFGH-JKM0', None)
    """
    cleaned = re.sub(r"[\s-]", "", typed.upper()).translate(_CONFUSABLE)
    if len(cleaned) != 12 or any(c not in _CROCKFORD for c in cleaned):
        return None
    return f"{cleaned[:4]}-{cleaned[4:8]}-{cleaned[8:]}"


def normalize_answer(kind: str, typed: str) -> str:
    """A challenge answer in canonical form: a birth date as YYYYMMDD (from YYYY-MM-DD,
    DD.MM.YYYY is ambiguous and refused), a PIN as its digits."""
    if kind == "birthdate":
        digits = re.sub(r"[^0-9]", "", typed)
        return digits if len(digits) == 8 else ""
    return re.sub(r"\s", "", typed)


class Hasher:
    """Keyed hashes of share secrets."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> Hasher:
        """The key in ``path``, created (0600) when missing."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Whole, then linked in: of several processes starting at once, one key wins.
            temporary = path.with_name(f".{path.name}.{os.getpid()}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(secrets.token_bytes(32))
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        return cls(path.read_bytes())

    def digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def matches(self, purpose: str, value: str, expected: bytes) -> bool:
        return hmac.compare_digest(self.digest(purpose, value), expected)
