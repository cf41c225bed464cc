"""A served test catalog: twelve coloured products indexed (vectors, tags, images) with the small random model."""

from __future__ import annotations

import pytest
from tests.conftest import copy_index, make_rows, prepared_index
from tests.support.http import TOKEN

from vitrine.serve.settings import ServeSettings


@pytest.fixture(scope="session")
def served_index(tmp_path_factory):
    """Built once; each test copies it, so writes never leak between tests."""
    root = tmp_path_factory.mktemp("served")
    prepared_index(root / "catalog", str(root / "index"), make_rows(12))
    return root


@pytest.fixture
def settings(served_index, tmp_path):
    return ServeSettings(
        index=str(copy_index(served_index / "index", tmp_path)), tag_model="vitrine:small", combiner="sum",
        write_token=TOKEN, max_upload_bytes=200_000, max_pixels=1_000_000, max_k=50, max_text_chars=100,
    )


@pytest.fixture
def client(settings):
    from fastapi.testclient import TestClient

    from vitrine.serve.app import create_app

    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.service.close()
