"""STOW-RS (PS3.18 §10.5), the one way the archive stores: the request body's reader
(:mod:`.reader`), the orchestration of parsing, indexing and the two-phase write
(:mod:`.orchestrator`), and the response it makes (:mod:`.response`)."""

from app.services.stow.orchestrator import Prepared, prepare_part, store, store_files, store_prepared
from app.services.stow.response import InstanceResult, StowResponse

__all__ = [
    "InstanceResult",
    "Prepared",
    "StowResponse",
    "prepare_part",
    "store",
    "store_files",
    "store_prepared",
]
