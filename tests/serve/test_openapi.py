"""/openapi.json describes what the server sends: every status, the error body, no 422; schemathesis
checks the running app (in-process, ASGI) against it."""

from __future__ import annotations

from collections import Counter

import pytest

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

SEED = 20240601
EXAMPLES = 50  # per operation and generation mode; the whole run stays well under a minute on 2 cores
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(serve_ws):
    from schemathesis.python.asgi import shutdown_lifespans

    from kifabrik.serve import ServeConfig, build_app
    from kifabrik.serve.keys import create_key

    app = build_app(serve_ws, ServeConfig(allowed_hosts=["testserver"], default_max_tokens=4, max_batch=4,
                                          batch_wait_ms=0))
    key = create_key(serve_ws, ["*"])[1]
    yield app, key
    shutdown_lifespans()  # the ASGI client started the app's lifespan; stop its scheduler threads now


def test_api_conforms_to_its_schema(api):
    """Every operation, schema-valid and schema-invalid bodies: no 5xx, only documented statuses, bodies that
    match the documented schema.

    schemathesis' pytest plugin (`schema.parametrize`) does not run under pytest 9 (it reads a removed
    node attribute), so the operations are driven through its Python API with Hypothesis directly.
    """
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    app, key = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    no_invalid: list[str] = []  # operations without a body or parameter that could be invalid
    operations = [result.ok() for result in schema.get_all_operations()]
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(op, mode, key, sent, failures)
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                no_invalid.append(f"{op.method.upper()} {op.path}")
    total = sum(sent.values()) + len(failures)
    print(f"\nschemathesis {schemathesis.__version__}: {len(operations)} operations, {total} cases, "
          f"{len(failures)} failures; no invalid input possible for {no_invalid}; statuses {dict(sorted(sent.items()))}")
    assert failures == []
    # nothing to send wrong there: no body, no query, and every string is a valid model name in the path
    assert set(no_invalid) <= {"GET /health", "GET /metrics", "GET /v1/models", "GET /v1/models/{name}"}
    assert len(operations) == 6
    assert {op for op, status in sent if status == 200} == {f"{o.method.upper()} {o.path}" for o in operations}


def _fuzz(op, mode, key: str, sent: Counter[tuple[str, int]], failures: list[str]) -> None:
    """Up to EXAMPLES cases of one operation in one generation mode, seeded; failures are collected."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.core.failures import FailureGroup

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode), served=st.sampled_from(["tiny", "tiny-a", None]))
    def run(case: schemathesis.Case, served: str | None) -> None:
        # a random string is never a served name: two of three valid cases ask for one (the schema
        # cannot list them, /openapi.json is public and must not name the models)
        if served and mode is GenerationMode.POSITIVE:
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = served
            if case.path_parameters and "name" in case.path_parameters:
                case.path_parameters["name"] = served
        try:
            response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
        except FailureGroup as group:
            failures.extend(f"{case.method} {case.path} [{mode}]: {f.title}" for f in group.exceptions)
            return
        sent[(f"{case.method} {case.path}", response.status_code)] += 1

    run()


def test_spec_documents_every_status_and_no_422(api):
    app, _ = api
    spec = app.openapi()
    ops = {f"{m.upper()} {p}": op for p, item in spec["paths"].items() for m, op in item.items()}
    assert set(ops) == {"POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
                        "GET /v1/models/{name}", "GET /health", "GET /metrics"}
    assert not any("422" in op["responses"] for op in ops.values())
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(ops["POST /v1/chat/completions"]["responses"]) == {"200", "400", "401", "403", "404", "413", "421",
                                                                  "429", "500", "503"}
    assert set(ops["GET /v1/models/{name}"]["responses"]) == {"200", "401", "404", "413", "421", "429", "500"}
    assert set(ops["GET /health"]["responses"]) == {"200", "413", "421", "500"}
    error = ops["POST /v1/completions"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "text/event-stream" in ops["POST /v1/chat/completions"]["responses"]["200"]["content"]


def test_schema_rejects_what_the_handler_rejects(api):
    """Bodies the handler refuses are invalid under the published schema too."""
    from jsonschema import Draft202012Validator

    app, _ = api
    spec = app.openapi()

    def valid(component: str, body: dict) -> bool:
        root = {**spec["components"]["schemas"][component], "components": spec["components"]}  # refs resolve
        return Draft202012Validator(root).is_valid(body)

    user = [{"role": "user", "content": "x"}]
    assert valid("CompletionRequest", {"model": "tiny", "prompt": "x"})
    assert not valid("CompletionRequest", {"model": "tiny", "prompt": []})
    assert not valid("CompletionRequest", {"model": "tiny", "prompt": ["a", "b"]})
    named = {"type": "function", "function": {"name": ""}}
    assert not valid("ChatRequest", {"model": "tiny", "messages": user, "tool_choice": named,
                                     "tools": [{"type": "function", "function": {"name": "f"}}]})
    for field, value in [("seed", 2**80), ("n", 2), ("temperature", 3), ("top_p", 0), ("max_tokens", 0),
                         ("logprobs", True), ("stop", ["a"] * 5), ("frequency_penalty", 1)]:
        assert not valid("ChatRequest", {"model": "tiny", "messages": user, field: value}), field
