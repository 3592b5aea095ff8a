from app.dicom.leniency import read_leniently

# pydicom's own test files carry values that bend the standard (rtdose.dcm: a UID component
# with a leading zero); the archive reads them without warnings, and so do the tests.
read_leniently()

pytest_plugins = ["tests.servers", "tests.fixtures"]
