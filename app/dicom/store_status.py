"""What a C-STORE response status means to a sender (PS3.4 B.2.3, PS3.7 C.4): sent,
worth retrying, or refused for good. Pure.
"""

from __future__ import annotations

from enum import Enum


class Delivery(Enum):
    SENT = "sent"  # Success, or a Warning: the instance is stored (perhaps coerced)
    RETRY = "retry"  # a condition that may pass: out of resources, processing failure
    REFUSED = "refused"  # the peer will not take this instance as it is


def delivery(status: int) -> Delivery:
    """The meaning of a C-STORE response status.

    >>> [delivery(s).value for s in (0x0000, 0xB000, 0xA700, 0x0110, 0xA900, 0xC000, 0x0122)]
    ['sent', 'sent', 'retry', 'retry', 'refused', 'refused', 'refused']
    """
    if status == 0x0000 or 0xB000 <= status <= 0xBFFF or status in (0x0001, 0x0107, 0x0116):
        # PS3.7 C.3: Warnings; the instance was stored (B000 coercion, B007 mismatch, B006
        # element discarded; 0001, 0107, 0116 attribute warnings).
        return Delivery.SENT
    if 0xA700 <= status <= 0xA7FF or status in (0x0110, 0x0213):
        # PS3.4 B.2.3 "Refused: Out of Resources"; PS3.7 C.4.2 Processing failure and
        # Resource limitation (0213, PS3.7 Annex C): transient by their nature.
        return Delivery.RETRY
    return Delivery.REFUSED
