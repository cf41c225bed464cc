"""The service's "no close match": calibrated once at start and after a commit that moved the catalog by a quarter,
never per query; image queries judged; the judgement before kept as `relevance: titles`."""

from __future__ import annotations

from dataclasses import replace

import pytest
from tests.conftest import COLOURS, jpeg_bytes

import vitrine.search.engine as service_module  # where calibrations are made
from vitrine.serve.service import Query, SearchService
from vitrine.serve.settings import ServeSettings


@pytest.fixture
def counted(monkeypatch):
    """How many calibrations the service made."""
    calls: list[str] = []
    real = service_module.calibrate

    def calibrate(store, encode, method="shopper", **kwargs):
        calls.append(method)
        return real(store, encode, method, **kwargs)

    monkeypatch.setattr(service_module, "calibrate", calibrate)
    return calls


def picture():
    from io import BytesIO

    from PIL import Image

    return Image.open(BytesIO(jpeg_bytes(COLOURS["Green"]))).convert("RGB")


def test_calibration_is_made_at_start_and_queries_only_look_it_up(settings, counted):
    service = SearchService(settings)
    try:
        assert counted == ["shopper"]  # at start: no query waits for it
        for text in ("red tshirt", "surfboard", "jeans for women"):
            service.rank(Query(text=text))
        judged = service.rank(Query(image=picture())).relevance
        assert counted == ["shopper"]
        assert judged["level"] is not None and isinstance(judged["close_match"], bool)  # image queries are judged
        service.upsert("extra", "Brand Red Tshirts", {"gender": "Men", "articleType": "Tshirts"}, picture())
        service.rank(Query(text="red tshirt"))
        assert counted == ["shopper"]  # one product more: the calibration still holds
    finally:
        service.close()


def test_relevance_titles_is_the_judgement_before(settings, counted):
    service = SearchService(replace(settings, relevance="titles"))
    try:
        assert counted == ["titles"]
        assert service.rank(Query(image=picture())).relevance["close_match"] is None  # images were never judged
        assert service.rank(Query(text="red tshirt")).relevance["level"] is not None
    finally:
        service.close()


def test_the_relevance_setting_is_checked():
    with pytest.raises(ValueError, match="relevance must be one of shopper, titles, got 'guess'"):
        ServeSettings(relevance="guess")
