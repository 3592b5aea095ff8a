"""Filmless: a DICOMweb (PS3.18) imaging archive over PostgreSQL and object storage."""

__version__ = "0.1.0"
