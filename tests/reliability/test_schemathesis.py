"""Property-based requests from the checked-in OpenAPI document (schemathesis), a few
examples per operation, against a live server: no 5xx, whatever the input."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from tests.reliability.conftest import REQUEST_TIMEOUT, Node, node_env, node_token

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
EXAMPLES = int(os.environ.get("FILMLESS_SCHEMATHESIS_EXAMPLES", "2"))


# Bodies the document declares as bytes (a ZIP of DICOM files, a multipart/related of
# Part 10 files): whatever bytes hypothesis draws are sent as they are.
@schemathesis.serializer("application/zip", "multipart/related", "application/dicom")
def _raw(ctx, value):  # type: ignore[no-untyped-def]
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_path(OPENAPI)


@pytest.fixture(scope="module")
def fuzzed_node(migrated_db: str, signing_key: Path) -> Iterator[tuple[Node, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="filmless-rel-st-"))
    node = Node(node_env(migrated_db, workdir / "data", signing_key), workdir)
    node.start()
    try:
        yield node, node_token(node)
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_a_5xx(case, fuzzed_node):  # type: ignore[no-untyped-def]
    node, token = fuzzed_node
    headers = {"Authorization": f"Bearer {token}"}
    response = case.call(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT)
    case.validate_response(response, checks=[not_a_server_error])
