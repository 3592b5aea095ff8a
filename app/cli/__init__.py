"""The ``filmless`` command line (:func:`app.cli.main.main`)."""
