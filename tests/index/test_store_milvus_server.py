"""The store conformance suite (tests/index/store_contract.py) on a Milvus server (tests/support/milvus_server.py's,
shared by the session; each test's stores are collections of its own there)."""

from tests.index.store_contract import *  # noqa: F403 (the suite's tests and fixtures)
from tests.index.store_contract import backend_fixture

backend = backend_fixture("milvus-server")
