"""``python -m app.cli``: the ``filmless`` command."""

import sys

from app.cli.main import main

sys.exit(main())
