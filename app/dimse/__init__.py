"""DICOM networking (DIMSE, PS3.7/PS3.8): the listener that speaks to modalities and PACS,
an adapter onto the same services as DICOMweb."""
