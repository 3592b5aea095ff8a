"""How leniently pydicom reads, set once per process.

Modalities send values that bend the standard (a UID component with a leading zero, a
malformed date): the archive stores what it is given (PS3.5 leaves conformance to the
sender) and does not warn per value. pydicom holds this as process-wide configuration, so
it is set at process start, in one place: by the command line (every command, ``serve``
included), by each worker process of a several-worker server
(:func:`app.main.create_app_from_environment`), and by the test suite's conftest.
"""

from __future__ import annotations

import pydicom.config


def read_leniently() -> None:
    """Parse values without validating them (pydicom's ``reading_validation_mode``)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
