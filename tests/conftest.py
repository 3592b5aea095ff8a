import pydicom.config

# pydicom's own test files carry values that bend the standard (rtdose.dcm: a UID component
# with a leading zero); the archive reads them without warnings, and so do the tests.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

pytest_plugins = ["tests.servers", "tests.fixtures"]
