"""STOW-RS (PS3.18 §10.5), the one way the archive stores: the request body's reader
(:mod:`.reader`), the orchestration of parsing, indexing and the two-phase write
(:mod:`.orchestrator`), and the response it makes (:mod:`.response`)."""

from app.services.stow.orchestrator import (
    describe_file,
    parse_part,
    read_file,
    store,
    store_files,
    store_parsed,
)
from app.services.stow.response import InstanceResult, StowResponse

__all__ = [
    "InstanceResult",
    "StowResponse",
    "describe_file",
    "parse_part",
    "read_file",
    "store",
    "store_files",
    "store_parsed",
]
