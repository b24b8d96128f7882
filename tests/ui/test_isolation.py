"""Projects are kept apart on every route of the web UI: a member of project B who types the URL of
anything of project A — with A's real ids — gets 404, for every GET and every POST the app has.

The routes are read from the app itself, so a new page is covered the day it is added (a path
parameter this test does not know fails it, naming the parameter).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute

sys.path.insert(0, str(Path(__file__).parent.parent / "train"))
sys.path.insert(0, str(Path(__file__).parent.parent / "document"))

import doc_builders
from train_builders import chat_rows, make_dataset

from kifabrik.ui import jobs
from kifabrik.ui.app import create_app
from kifabrik.workspace import Workspace
from tests.ui.clients import sign_in

_PARAM = re.compile(r"{([a-z_]+)(?::[a-z]+)?}")


def _project_a(ws: Workspace, tiny_model_dir: Path) -> dict[str, str]:
    """Project A with one of everything a URL can name; the path parameters that name them."""
    from kifabrik.models.sources import add_model

    a = ws.scoped("werk-a")
    model = add_model(a, str(tiny_model_dir), name="tiny")
    dataset = make_dataset(a, "service-chats", chat_rows(8), chat_rows(2))
    evaluation = doc_builders.make_evaluation(a, model)
    request = a.catalog.request_release(model.id, name="tiny-release", version="1.0.0", audience="internal",
                                        user="anna")
    job = jobs.start_job(ws, project="werk-a", user="anna", kind="other", title="list", argv=["models", "list"])
    deadline = time.monotonic() + 120
    while not jobs.get_job(ws, "werk-a", job.id).finished and time.monotonic() < deadline:
        time.sleep(0.2)
    return {"project": "werk-a", "ref": dataset.id, "artifact": dataset.id, "artifact_id": dataset.id,
            "dataset": dataset.id, "model": model.id, "evaluation": evaluation.id, "job_id": job.id,
            "request_id": request.id, "path": "manifest.json", "key_id": "00000000", "user": "anna",
            "user_name": "anna", "name": "anna"}


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, also those of included routers (FastAPI keeps them as `_IncludedRouter`)."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        else:
            yield route


def test_a_member_of_another_project_gets_404_on_every_route(ws: Workspace, tiny_model_dir: Path) -> None:
    values = _project_a(ws, tiny_model_dir)
    anna = sign_in(ws, "anna", "werk-a", "admin")
    bob = sign_in(ws, "bob", "werk-b", "admin")  # admin of B: the highest role, of the wrong project
    routes = [r for r in _routes(create_app(ws).routes) if isinstance(r, APIRoute) and "{project}" in r.path]
    assert len(routes) >= 11, [r.path for r in routes]  # the project navigation at least
    checked = []
    for route in routes:
        unknown = [p for p in _PARAM.findall(route.path) if p not in values]
        assert not unknown, f"{route.path}: add a value of project A for {unknown} to this test"
        named = {**values, "ref": values["evaluation"]} if "/evaluations/" in route.path else values
        url = _PARAM.sub(lambda m: named[m.group(1)], route.path)
        for method in sorted(route.methods - {"HEAD"}):
            if method == "GET":
                r = bob.get(url, follow_redirects=False)
            else:
                r = bob.request(method, url, data={"csrf": bob.csrf}, headers={"x-csrf-token": bob.csrf},
                                follow_redirects=False)
            assert r.status_code == 404, f"{method} {url} as a member of werk-b: {r.status_code}"
            assert "werk-a" not in r.text.replace(url, "")  # nothing of A in the answer (but the URL typed)
            checked.append(f"{method} {route.path}")
            # (the events stream would wait for the job; the recorded evaluation has no HTML report)
            if method == "GET" and not route.path.endswith(("/events", "/report")):
                mine = anna.get(url, follow_redirects=False)
                assert mine.status_code != 404, f"GET {url} as a member of werk-a: 404 (the test's id is wrong)"
    assert any(c.startswith("POST") for c in checked)
