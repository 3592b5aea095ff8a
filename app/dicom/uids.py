"""What a UID looks like in a request (PS3.5 §9.1): components of digits separated by
dots, at most 64 characters. Requests are held to this; stored instances are read more
leniently (:mod:`app.dicom.header`), since modalities send what they send.

>>> is_uid("1.2.840.10008.1.2.1"), is_uid("1..2"), is_uid("1.2.x"), is_uid("1" * 65)
(True, False, False, False)
"""

from __future__ import annotations

import re

#: For validators that take a pattern (FastAPI's Path, pydantic's Field).
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
UID_MAX_LENGTH = 64

_UID = re.compile(UID_PATTERN)


def is_uid(value: str) -> bool:
    return len(value) <= UID_MAX_LENGTH and _UID.match(value) is not None
