"""The store conformance suite (tests/index/store_contract.py) on the embedded backends: FAISS and Milvus Lite."""

from tests.index.store_contract import *  # noqa: F403 (the suite's tests and fixtures)
from tests.index.store_contract import backend_fixture

backend = backend_fixture("faiss", "milvus")
