"""Schemathesis against the app through its ASGI transport: every operation of the OpenAPI spec, seeded and bounded.

Checks: no 5xx, and each response conforms to the spec (status code declared, content type declared, body valid
against its schema). A finding fails the suite; each one fixed so far has a regression test in test_api.py,
test_json_api.py or test_security.py.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.http import TOKEN

EXAMPLES_PER_OPERATION = int(os.environ.get("VITRINE_SCHEMATHESIS_EXAMPLES", "40"))  # CI: 40; a deeper local hunt: more
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CASES: Counter = Counter()  # cases run per operation, printed at the end (pytest -s)


def operations() -> list[tuple[str, GenerationMode]]:
    """(label, mode) for every operation of the spec, read from an app built without a catalog (the spec does not
    depend on one): valid inputs for all, invalid ones where there is a body or query to break (a free-form path
    parameter cannot be invalid)."""
    from types import SimpleNamespace

    from vitrine.serve.app import create_app
    from vitrine.serve.settings import ServeSettings

    spec = schemathesis.openapi.from_asgi("/openapi.json", create_app(ServeSettings(), service=SimpleNamespace()))
    pairs = []
    for result in spec.get_all_operations():
        operation = result.ok()
        pairs.append((operation.label, GenerationMode.POSITIVE))
        definition = operation.definition.raw
        if "requestBody" in definition or any(p.get("in") == "query" for p in definition.get("parameters", [])):
            pairs.append((operation.label, GenerationMode.NEGATIVE))
    return pairs


@pytest.fixture
def api_schema(settings):
    from vitrine.serve.app import create_app

    app = create_app(settings)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.service.close()


@pytest.mark.parametrize("label, mode", operations(), ids=lambda v: v.value if isinstance(v, GenerationMode) else v)
def test_every_operation_answers_within_its_spec(api_schema, label, mode):
    operation = api_schema.find_operation_by_label(label)
    headers = {"Authorization": f"Bearer {TOKEN}"} if label.split()[0] != "GET" and "/products" in label else None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)
        CASES[f"{label} ({mode.value})"] += 1

    run()


def teardown_module(module):
    print(
        f"\nschemathesis cases run: {sum(CASES.values())} over {len(CASES)} operation x mode pairs: "
        f"{dict(sorted(CASES.items()))}"
    )
