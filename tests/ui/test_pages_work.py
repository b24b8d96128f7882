"""The work pages of the KI-Hub (training jobs, evaluations, releases, chat) over HTTP, with real jobs.

Every job here is a real detached runner training or evaluating the tiny model; releases run the
real release stage on records the document tests build; the chat goes through the serving path.
"""

from __future__ import annotations

import html
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
sys.path.insert(0, str(Path(__file__).parents[1] / "document"))
sys.path.insert(0, str(Path(__file__).parents[1] / "kb"))

import doc_builders
from train_builders import chat_rows, make_dataset

from kifabrik.ui import jobs
from kifabrik.workspace import Workspace
from tests.ui.clients import sign_in

A, B = "werk-a", "werk-b"
#: the tiny model's fast sizes (as in tests/train): 3 steps of 2 sequences of at most 128 tokens
TRAIN_FORM = {"name": "ui-lora", "max_steps": "3", "learning_rate": "0,005", "rank": "4", "batch_size": "2",
              "max_seq_length": "128"}


@pytest.fixture
def pws(ws: Workspace, tiny_model_dir: Path) -> Workspace:
    """Project werk-a as a request sees it, with the tiny model and a chat dataset."""
    from kifabrik.models.sources import add_model

    w = ws.scoped(A)
    add_model(w, str(tiny_model_dir), name="tiny")
    make_dataset(w, "service-chats", chat_rows(24), chat_rows(4))
    return w


def client(ws: Workspace, user: str, project: str, role: str) -> Any:
    c = sign_in(ws, user, project, role)
    c.headers["accept-language"] = "en"
    return c


def wait(ws: Workspace, project: str, job_id: str, timeout: float = 300) -> jobs.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get_job(ws, project, job_id)
        if job.finished:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}:\n{Path(job.log).read_text()}"
        time.sleep(0.5)


def job_id_of(response: Any, project: str = A) -> str:
    assert response.status_code == 303, response.text
    m = re.fullmatch(rf"/p/{project}/jobs/([0-9a-f]{{12}})", response.headers["location"])
    assert m, response.headers["location"]
    return m.group(1)


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of a text/event-stream body."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def test_a_training_started_on_the_form_runs_as_a_job_and_lists_its_adapter(ws, pws):
    anna = client(ws, "anna", A, "engineer")
    page = anna.get(f"/p/{A}/jobs")
    assert page.status_code == 200 and "<h1>Training" in page.text
    assert f'<option value="{pws.catalog.get_artifact("tiny").id}"' in page.text
    base, data = pws.catalog.get_artifact("tiny").id, pws.catalog.get_artifact("service-chats").id

    bad = anna.post_form(f"/p/{A}/jobs/train", {"base": base, "data": [data], **TRAIN_FORM, "learning_rate": "fast",
                                                  "rank": "0"})
    assert bad.status_code == 400
    assert "Enter a number." in bad.text and "Input should be greater than or equal to 1" not in bad.text
    assert jobs.list_jobs(pws, A) == []  # nothing started

    job_id = job_id_of(anna.post_form(f"/p/{A}/jobs/train", {"base": base, "data": [data], **TRAIN_FORM}))
    job = jobs.get_job(pws, A, job_id)
    assert job.argv == ["train", "--base", base, "--data", data, "--name", "ui-lora", "--max-steps", "3",
                        "--lr", "0.005", "--batch-size", "2", "--max-seq-length", "128", "--rank", "4", "--alpha", "8"]
    assert (job.user, job.kind, job.title) == ("anna", "train", "ui-lora")
    live = anna.get(f"/p/{A}/jobs/{job_id}")
    assert live.status_code == 200 and f'data-events="/p/{A}/jobs/{job_id}/events"' in live.text

    done = wait(pws, A, job_id)
    assert done.status == "succeeded", Path(done.log).read_text()
    adapter = pws.catalog.get_artifact("ui-lora", "adapter")
    page = anna.get(f"/p/{A}/jobs/{job_id}").text
    assert f'href="/p/{A}/artifacts/{adapter.id}"' in page and "Step 3 of 3" in page
    assert 'data-events=""' in page  # a finished job is not followed
    assert page.count("<polyline") == 1 and re.search(r'points="(\d+\.\d,\d+\.\d ){2}\d+\.\d,\d+\.\d"', page)
    listed = anna.get(f"/p/{A}/jobs").text
    assert f'href="/p/{A}/jobs/{job_id}">ui-lora</a>' in listed and "succeeded" in listed

    events = sse(anna.get(f"/p/{A}/jobs/{job_id}/events").text)
    assert [e for e, _ in events] == ["progress", "end"]
    final = events[-1][1]
    assert (final["status"], final["step"], final["max_steps"], final["outputs"]) == ("succeeded", 3, 3, [adapter.id])
    assert [s for s, _ in final["loss"]] == [1, 2, 3]

    # a viewer sees the job but gets no forms, and a forged start is refused
    vera = client(ws, "vera", A, "viewer")
    assert "Start a training" not in vera.get(f"/p/{A}/jobs").text
    assert vera.post_form(f"/p/{A}/jobs/train", {"base": base, "data": [data], **TRAIN_FORM}).status_code == 403
    assert vera.post_form(f"/p/{A}/jobs/{job_id}/cancel").status_code == 403


def test_a_stopped_training_shows_resume_and_resuming_starts_a_new_job_on_the_same_run(ws, pws):
    anna = client(ws, "anna", A, "engineer")
    base, data = pws.catalog.get_artifact("tiny").id, pws.catalog.get_artifact("service-chats").id
    job_id = job_id_of(anna.post_form(f"/p/{A}/jobs/train", {"base": base, "data": [data], **TRAIN_FORM,
                                                             "name": "lang", "max_steps": "5000"}))
    deadline = time.monotonic() + 300
    while (jobs.progress(pws, jobs.get_job(pws, A, job_id))["step"] or 0) < 1:
        assert time.monotonic() < deadline and not jobs.get_job(pws, A, job_id).finished
        time.sleep(0.2)
    assert f'action="/p/{A}/jobs/{job_id}/cancel"' in anna.get(f"/p/{A}/jobs/{job_id}").text
    assert anna.post_form(f"/p/{A}/jobs/{job_id}/cancel").status_code == 303
    stopped = wait(pws, A, job_id)
    assert stopped.status == "cancelled"
    page = anna.get(f"/p/{A}/jobs/{job_id}").text
    assert f'action="/p/{A}/jobs/{job_id}/resume"' in page and f"/jobs/{job_id}/cancel" not in page
    again = job_id_of(anna.post_form(f"/p/{A}/jobs/{job_id}/resume"))
    resumed = jobs.get_job(pws, A, again)
    assert (resumed.argv, resumed.resumed_from, resumed.user) == (["train", "--resume", stopped.run_id], job_id, "anna")
    assert f'href="/p/{A}/jobs/{job_id}">Resumed from job {job_id}</a>' in anna.get(f"/p/{A}/jobs/{again}").text
    anna.post_form(f"/p/{A}/jobs/{again}/cancel")
    assert wait(pws, A, again).status == "cancelled"
    # a cancelled job cannot be cancelled again: the job module's refusal, as an error page
    r = anna.post_form(f"/p/{A}/jobs/{job_id}/cancel")
    assert r.status_code == 400 and f"job {job_id} already ended (cancelled)" in r.text


def test_a_recipe_is_checked_before_it_starts_and_its_errors_name_the_line(ws, pws, home):
    anna = client(ws, "anna", A, "engineer")
    bad = b"name: demo\nmodel:\n  source: tiny\nstages:\n  - stage: train\n    data: [service-chats]\n    stepz: 3\n"
    r = anna.post(f"/p/{A}/jobs/recipe", data={"csrf": anna.csrf}, files={"recipe": ("mein-rezept.yaml", bad)},
                  follow_redirects=False)
    assert r.status_code == 400
    assert re.search(r"mein-rezept\.yaml:7", r.text), r.text
    assert not list((home / "ui" / "recipes" / A).glob("*.yaml"))  # an invalid recipe is not kept
    assert jobs.list_jobs(pws, A) == []
    good = b"name: demo\nmodel:\n  source: tiny\nstages: []\n"
    job_id = job_id_of(anna.post(f"/p/{A}/jobs/recipe", data={"csrf": anna.csrf},
                                 files={"recipe": ("leer.yaml", good)}, follow_redirects=False))
    job = jobs.get_job(pws, A, job_id)
    (stored,) = (home / "ui" / "recipes" / A).glob("*-leer.yaml")
    assert (job.kind, job.title, job.argv) == ("recipe", "leer.yaml", ["run", str(stored)])
    assert wait(pws, A, job_id).status == "succeeded", Path(job.log).read_text()


def test_an_evaluation_job_records_metrics_with_n_and_interval_and_a_sandboxed_report(ws, pws):
    anna = client(ws, "anna", A, "engineer")
    tiny = pws.catalog.get_artifact("tiny")
    page = anna.get(f"/p/{A}/evaluations").text
    assert 'value="task:kifabrik:evaluate/data/tasks/werkstatt.yaml"' in page and 'value="suite:ve"' in page
    job_id = job_id_of(anna.post_form(f"/p/{A}/evaluations/run", {
        "model": tiny.id, "task": ["task:kifabrik:evaluate/data/tasks/werkstatt.yaml"], "limit": "4"}))
    assert jobs.get_job(pws, A, job_id).argv == ["eval", tiny.id, "--task", "kifabrik:evaluate/data/tasks/werkstatt.yaml",
                                                 "--limit", "4"]
    done = wait(pws, A, job_id)
    assert done.status == "succeeded", Path(done.log).read_text()
    (ev,) = pws.catalog.list_artifacts("evaluation")
    results = json.loads((pws.path(ev) / "results.json").read_text())
    stat = results["stats"]["task.werkstatt.acc"]
    assert stat["n"] == 4  # --limit 4

    listed = anna.get(f"/p/{A}/evaluations").text
    assert f'href="/p/{A}/evaluations/{ev.id}"' in listed and "task.werkstatt.acc" in listed
    detail = anna.get(f"/p/{A}/evaluations/{ev.id}").text
    row = re.search(r"<code>task\.werkstatt\.acc</code></th><td class=\"num\">([^<]+)</td><td class=\"num\">(\d+)</td>"
                    r"\s*<td>([^<]+)</td>", detail)
    assert row and row.groups() == (f"{results['metrics']['task.werkstatt.acc']:.3f}", "4",
                                    f"{stat['ci_low']:.3f}–{stat['ci_high']:.3f}")
    assert f'<iframe class="report" src="/p/{A}/evaluations/{ev.id}/report"' in detail and " sandbox>" in detail
    report = anna.get(f"/p/{A}/evaluations/{ev.id}/report")
    assert report.status_code == 200 and report.text == (pws.path(ev) / "report.html").read_text()
    assert report.headers["content-security-policy"] == ("sandbox; default-src 'none'; style-src 'unsafe-inline'; "
                                                         "img-src data:")

    other = doc_builders.make_evaluation(pws, tiny, acc=0.625, n=64)  # werkstatt acc 0.625 [0.503, 0.733]
    cmp = anna.get(f"/p/{A}/evaluations/compare", params={"a": ev.id, "b": other.id})
    assert cmp.status_code == 200
    a_acc = results["metrics"]["task.werkstatt.acc"]
    overlaps = stat["ci_low"] <= 0.733333 and 0.5025 <= stat["ci_high"]
    row = re.search(r"<code>task\.werkstatt\.acc</code></th>(.*?)</tr>", cmp.text, re.DOTALL)
    assert row and f"{0.625 - a_acc:+.3f}" in row.group(1)
    assert ("yes" if overlaps else "<strong>no</strong>") in row.group(1)


def _audit(ws: Workspace, action: str) -> list[Any]:
    return ws.catalog.audit_entries(action)


def test_four_eyes_the_requester_cannot_approve_and_another_approver_releases(ws, pws):
    tiny = pws.catalog.get_artifact("tiny")
    ds = doc_builders.make_dataset(pws, "open-chats", "open-with-attribution")
    adapter = doc_builders.make_adapter(pws, tiny, [ds], name="service-lora")
    from kifabrik.document import document

    document(pws, adapter.id)
    anna = client(ws, "anna", A, "approver")  # may approve, but never her own request
    bernd = client(ws, "bernd", A, "approver")
    bad = anna.post_form(f"/p/{A}/releases/request", {"artifact": adapter.id, "name": "svc release", "version": "1.0.0",
                                                      "audience": "public"})
    assert bad.status_code == 400 and "Letters, digits, dot, underscore and hyphen only" in bad.text
    assert pws.catalog.release_requests() == []
    r = anna.post_form(f"/p/{A}/releases/request", {"artifact": adapter.id, "name": "svc", "version": "1.0.0",
                                                    "audience": "public", "license": ""})
    assert r.status_code == 303
    (req,) = pws.catalog.release_requests()
    assert (req.status, req.requested_by, req.artifact_id) == ("pending", "anna", adapter.id)
    own = anna.get(f"/p/{A}/releases").text
    assert f"/releases/{req.id}/approve" not in own and "another approver decides" in own

    forged = anna.post_form(f"/p/{A}/releases/{req.id}/approve")
    assert forged.status_code == 400
    assert "a release request cannot be approved by the user who made it" in forged.text
    assert pws.catalog.get_release_request(req.id).status == "pending" and not pws.catalog.list_artifacts("release")

    assert f"/releases/{req.id}/approve" in bernd.get(f"/p/{A}/releases").text
    assert bernd.post_form(f"/p/{A}/releases/{req.id}/approve").status_code == 303
    decided = pws.catalog.get_release_request(req.id)
    (release,) = pws.catalog.list_artifacts("release")
    assert (decided.status, decided.decided_by, decided.release_id) == ("released", "bernd", release.id)
    assert (release.meta["release_name"], release.meta["release_version"]) == ("svc", "1.0.0")
    page = bernd.get(f"/p/{A}/releases").text
    assert f'href="/p/{A}/artifacts/{release.id}"' in page
    (asked,) = _audit(pws, "release.request")
    assert (asked.actor, asked.subject, asked.details["request"]) == ("user:anna", adapter.id, req.id)
    (approved,) = _audit(pws, "release.approve")
    assert (approved.actor, approved.decision, approved.details["release"]) == ("user:bernd", "permit", release.id)
    # the release stage's own entry names the approver as actor, as `kifabrik release` names the CLI
    assert [(e.actor, e.decision) for e in _audit(pws, "release")] == [("user:bernd", "permit")]

    # an engineer can request, never approve
    erik = client(ws, "erik", A, "engineer")
    erik.post_form(f"/p/{A}/releases/request", {"artifact": adapter.id, "name": "svc", "version": "1.0.1",
                                                "audience": "public"})
    pending = pws.catalog.release_requests("pending")[0]
    assert anna.post_form(f"/p/{A}/releases/{pending.id}/reject", {"reason": ""}).status_code == 400
    assert erik.post_form(f"/p/{A}/releases/{pending.id}/approve").status_code == 403
    assert anna.post_form(f"/p/{A}/releases/{pending.id}/reject", {"reason": "Version 1.0.1 kommt mit dem Handbuch"}
                          ).status_code == 303
    rejected = pws.catalog.get_release_request(pending.id)
    assert (rejected.status, rejected.decided_by, rejected.reason) == ("rejected", "anna",
                                                                        "Version 1.0.1 kommt mit dem Handbuch")
    assert [e.details["outcome"] for e in _audit(pws, "release.reject")] == ["rejected"]


def test_a_release_a_usage_policy_forbids_is_recorded_as_refused_with_the_reason(ws, pws):
    tiny = pws.catalog.get_artifact("tiny")
    ds = doc_builders.make_dataset(pws, "internal-chats", "internal-only")
    adapter = doc_builders.make_adapter(pws, tiny, [ds], name="internal-lora")
    anna = client(ws, "anna", A, "engineer")
    bernd = client(ws, "bernd", A, "approver")
    anna.post_form(f"/p/{A}/releases/request", {"artifact": adapter.id, "name": "svc", "version": "1",
                                                "audience": "public", "license": "MIT"})
    (req,) = pws.catalog.release_requests()
    assert req.options == {"license": "MIT"}
    assert bernd.post_form(f"/p/{A}/releases/{req.id}/approve").status_code == 303
    refused = pws.catalog.get_release_request(req.id)
    assert refused.status == "refused" and refused.release_id is None
    assert "refused by usage policy (release)" in refused.reason and "policy 'internal-only'" in refused.reason
    assert not pws.catalog.list_artifacts("release")
    page = bernd.get(f"/p/{A}/releases").text
    assert "refused by usage policy (release)" in page and "status-refused" in page
    (denied,) = _audit(pws, "release")  # the release stage's own refusal, by the approver
    assert (denied.actor, denied.decision, denied.details["refused_by"]) == ("user:bernd", "deny", "policy")
    (decision,) = _audit(pws, "release.approve")
    assert (decision.decision, decision.details["outcome"]) == ("deny", "refused")


def test_a_release_below_its_quality_gate_is_refused_with_the_measured_interval(ws, pws):
    from kifabrik.document import document

    tiny = pws.catalog.get_artifact("tiny")
    ds = doc_builders.make_dataset(pws, "open-chats", "open-with-attribution")
    adapter = doc_builders.make_adapter(pws, tiny, [ds], name="service-lora")
    doc_builders.make_evaluation(pws, adapter, acc=0.625, n=64)  # 40 of 64: Wilson 0.5025-0.7333
    document(pws, adapter.id)
    anna = client(ws, "anna", A, "engineer")
    bernd = client(ws, "bernd", A, "approver")
    form = anna.get(f"/p/{A}/releases").text
    assert '<option value="task.werkstatt.acc"></option>' in form  # the metrics the project's evaluations recorded
    assert anna.post_form(f"/p/{A}/releases/request", {
        "artifact": adapter.id, "name": "svc", "version": "2", "audience": "public", "gate_metric": "task.werkstatt.acc",
        "gate_bound": "min", "gate_value": "0,7"}).status_code == 303
    (req,) = pws.catalog.release_requests()
    assert req.options == {"gates": [{"min": {"metric": "task.werkstatt.acc", "value": 0.7}}]}
    assert "Gate: task.werkstatt.acc ≥ 0.7 (lower end of the 95 % CI" in bernd.get(f"/p/{A}/releases").text
    bernd.post_form(f"/p/{A}/releases/{req.id}/approve")
    refused = pws.catalog.get_release_request(req.id)
    assert refused.status == "refused" and "refused by quality gate" in refused.reason
    assert "metric task.werkstatt.acc = 0.625, 95 % CI 0.503–0.733, n = 64: the lower end 0.5025 is below 0.7" \
        in refused.reason
    assert "the lower end 0.5025 is below 0.7" in bernd.get(f"/p/{A}/releases").text
    assert not pws.catalog.list_artifacts("release")


def test_the_chat_answers_through_the_serving_path_with_the_disclosure_and_an_audit_entry(ws, pws):
    anna = client(ws, "anna", A, "engineer")
    page = anna.get(f"/p/{A}/chat").text
    assert '<option value="tiny"' in page and "Models load on first use" in page
    form = {"model": "tiny", "system": "", "message": "Wann ist der nächste Ölwechsel?", "temperature": "0",
            "max_tokens": "12"}
    whole = anna.post_form(f"/p/{A}/chat", form)
    assert whole.status_code == 200, whole.text
    text = re.search(r'<div class="answer" id="chat-answer">(.*?)</div>', whole.text, re.DOTALL).group(1)
    assert text.strip()
    assert "This content was generated by an AI system (EU AI Act, Art. 50)." in whole.text
    assert 'id="chat-disclosure" hidden' not in whole.text

    stream = anna.post(f"/p/{A}/chat/stream", data=form, headers={"X-CSRF-Token": anna.csrf})
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: {")]
    assert stream.text.rstrip().endswith("data: [DONE]")
    streamed = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert streamed == html.unescape(text)  # greedy: the same answer, token by token
    assert all(c["ai_generated"] for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    entries = _audit(pws, "serve.request")
    assert [(e.actor, e.decision, e.details["stream"]) for e in entries] == [("user:anna", "permit", True)] * 2
    assert entries[0].details["ai_notice"] is True  # the AI notice went into the system prompt, as in kifabrik serve
    assert entries[0].details["endpoint"] == f"/p/{A}/chat/completions"
    assert anna.post(f"/p/{A}/chat/stream", data=form).status_code == 400  # no CSRF token
    vera = client(ws, "vera", A, "viewer")  # chatting runs a model: work, engineer and up
    assert "chat-form" not in vera.get(f"/p/{A}/chat").text
    assert vera.post_form(f"/p/{A}/chat", form).status_code == 403
    assert len(_audit(pws, "serve.request")) == 2


def test_a_fach_llm_answer_shows_its_sources(ws, pws, tmp_path):
    from kb_datafiles import QA, make_data

    from kifabrik.kb.build import build_kb
    from kifabrik.kb.fachllm import create_fach_llm

    data = make_data(pws, tmp_path)
    kb = build_kb(pws, "wissen", [data.chats, data.handbook, data.secret])
    create_fach_llm(pws, "tiny-fach", pws.catalog.get_artifact("tiny"), kb, k=2)
    anna = client(ws, "anna", A, "engineer")
    assert '<option value="tiny-fach"' in anna.get(f"/p/{A}/chat").text
    r = anna.post_form(f"/p/{A}/chat", {"model": "tiny-fach", "message": QA[0][0], "temperature": "0",
                                        "max_tokens": "4"})
    assert r.status_code == 200, r.text
    sources = re.search(r'<ol class="sources" id="chat-sources"[^>]*>(.*?)</ol>', r.text, re.DOTALL).group(1)
    # the tiny model's context holds the best source only (tests/kb): the handbook's or the chats' answer
    assert f"<blockquote>{html.escape(QA[0][1])}</blockquote>" in sources
    assert "This content was generated by an AI system" in r.text
    (entry,) = _audit(pws, "serve.request")
    assert entry.actor == "user:anna" and entry.details["model"] == "tiny-fach"


def test_every_work_route_is_404_for_a_user_of_another_project(ws, pws):
    tiny = pws.catalog.get_artifact("tiny")
    ds = pws.catalog.get_artifact("service-chats")
    anna = client(ws, "anna", A, "engineer")
    job_id = job_id_of(anna.post_form(f"/p/{A}/jobs/train", {"base": tiny.id, "data": [ds.id], **TRAIN_FORM,
                                                             "max_steps": "1"}))
    evaluation = doc_builders.make_evaluation(pws, tiny)
    anna.post_form(f"/p/{A}/releases/request", {"artifact": tiny.id, "name": "x", "version": "1", "audience": "public"})
    (req,) = pws.catalog.release_requests()
    olga = client(ws, "olga", B, "admin")
    gets = [f"/p/{A}/jobs", f"/p/{A}/jobs/{job_id}", f"/p/{A}/jobs/{job_id}/events", f"/p/{A}/evaluations",
            f"/p/{A}/evaluations/{evaluation.id}", f"/p/{A}/evaluations/{evaluation.id}/report",
            f"/p/{A}/evaluations/compare?a={evaluation.id}&b={evaluation.id}", f"/p/{A}/releases", f"/p/{A}/chat",
            f"/p/{B}/jobs/{job_id}", f"/p/{B}/jobs/{job_id}/events", f"/p/{B}/evaluations/{evaluation.id}",
            f"/p/{B}/evaluations/{evaluation.id}/report", f"/p/{B}/evaluations/compare?a={evaluation.id}&b={evaluation.id}"]
    for url in gets:
        assert olga.get(url).status_code == 404, url
    posts = {f"/p/{A}/jobs/train": {"base": tiny.id, "data": [ds.id]}, f"/p/{A}/jobs/{job_id}/cancel": {},
             f"/p/{B}/jobs/{job_id}/cancel": {}, f"/p/{B}/jobs/{job_id}/resume": {},
             f"/p/{A}/evaluations/run": {"model": tiny.id}, f"/p/{A}/releases/request": {"artifact": tiny.id},
             f"/p/{B}/releases/{req.id}/approve": {}, f"/p/{B}/releases/{req.id}/reject": {"reason": "nein"},
             f"/p/{A}/chat": {"model": "tiny", "message": "hallo"}}
    for url, data in posts.items():
        assert olga.post_form(url, data).status_code == 404, url
    # werk-b's own pages do not offer werk-a's records, and its chat does not know werk-a's model
    assert tiny.id not in olga.get(f"/p/{B}/jobs").text and tiny.id not in olga.get(f"/p/{B}/evaluations").text
    assert tiny.id not in olga.get(f"/p/{B}/releases").text
    r = olga.post(f"/p/{B}/chat/stream", data={"model": "tiny", "message": "hallo"}, headers={"X-CSRF-Token": olga.csrf})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = olga.post_form(f"/p/{B}/evaluations/run", {"model": tiny.id, "task": ["suite:ve"]})
    assert r.status_code == 400 and "Choose what to evaluate." not in r.text and "no artifact" in r.text.lower()
    assert pws.catalog.get_release_request(req.id).status == "pending"
    wait(pws, A, job_id)


def test_in_a_browser_the_job_page_follows_the_training_live_and_the_chat_streams(ws, pws, home, ui_server,
                                                                                    browser_factory, axe, screenshot):
    """Real Chromium on `kifabrik ui`: work.js follows the job's events and streams the chat answer."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.ui.clients import PASSWORD, ensure_member

    ensure_member(ws, "anna", A, "engineer")
    server = ui_server(home)
    browser = browser_factory("en-US,en")
    browser.get(server.url + "/login")
    browser.find_element(By.NAME, "username").send_keys("anna")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url.endswith(f"/p/{A}"))

    tiny = pws.catalog.get_artifact("tiny")
    job = jobs.start_job(pws, project=A, user="anna", kind="train", title="live",
                         argv=["train", "--base", tiny.id, "--data", "service-chats", "--max-steps", "3000",
                               "--batch-size", "2", "--max-seq-length", "128", "--rank", "4", "--name", "live"])
    browser.get(f"{server.url}/p/{A}/jobs/{job.id}")
    browser.execute_script("window.notReloaded = true;")
    # the page reloads itself when the job ends (work.js): an element may go stale between two looks
    wait_for = WebDriverWait(browser, 240, poll_frequency=0.2,
                             ignored_exceptions=[NoSuchElementException, StaleElementReferenceException])

    def step() -> int:
        m = re.fullmatch(r"Step (\d+) of 3000", browser.find_element(By.ID, "job-step").text.strip())
        return int(m.group(1)) if m else -1

    first = wait_for.until(lambda d: step() if step() >= 1 else False)
    wait_for.until(lambda d: step() > first)  # it moved on without a reload
    assert browser.execute_script("return window.notReloaded === true;")
    assert browser.find_element(By.ID, "loss-line").get_attribute("points").count(",") >= 2
    screenshot(browser, "work-job-live-1280")
    assert axe(browser) == []
    browser.find_element(By.CSS_SELECTOR, "button.danger").click()  # Stop, confirmed in the dialog
    browser.switch_to.alert.accept()
    wait_for.until(lambda d: d.find_element(By.ID, "job-status").get_attribute("data-status") == "cancelled")
    wait_for.until(lambda d: d.find_element(By.ID, "job-status").text == "cancelled")  # also after the reload

    browser.get(f"{server.url}/p/{A}/chat")
    browser.execute_script("window.notReloaded = true;")
    browser.find_element(By.ID, "chat-message").send_keys("Wann ist der nächste Ölwechsel?")
    max_tokens = browser.find_element(By.ID, "chat-max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("12")
    browser.find_element(By.CSS_SELECTOR, "#chat-form button[type=submit]").click()
    wait_for.until(lambda d: d.find_element(By.ID, "chat-disclosure").is_displayed())
    assert browser.execute_script("return window.notReloaded === true;")  # streamed by fetch, not the form post
    assert browser.find_element(By.ID, "chat-answer").text.strip()
    assert browser.find_element(By.ID, "chat-question").text == "Wann ist der nächste Ölwechsel?"
    assert [e.actor for e in _audit(pws, "serve.request")] == ["user:anna"]

    for width in (1280, 800):
        browser.set_window_size(width, 900)
        for name in ("jobs", "evaluations", "releases", "chat"):
            browser.get(f"{server.url}/p/{A}/{name}")
            assert browser.execute_script("return document.documentElement.scrollWidth") <= width, (name, width)
            screenshot(browser, f"work-{name}-{width}")
            assert axe(browser) == [], (name, width)
