"""Person names folded for matching (PS3.4 C.2.2.2.1 allows PN matching to ignore case
and accents, and PS3.18 §8.3.4.1 fuzzy matching asks for it)."""

from __future__ import annotations

import unicodedata


def fold(name: str) -> str:
    """Lower case without accents; wildcards and separators pass through unchanged.

    >>> fold("Müller^Zoë=ミュラー"), fold("ÉLODIE*")
    ('muller^zoe=ミュラー', 'elodie*')
    """
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).casefold()
