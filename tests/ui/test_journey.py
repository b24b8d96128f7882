"""The whole journey in a real browser (headless Chromium): sign in, upload a dataset, train a tiny
adapter and watch it finish, evaluate it, open the report, chat with the adapter, request a release
and approve it as a second user; a member of another project who types a URL gets 404; a training
goes on while the UI server restarts. Every main page is checked with axe-core (no serious or
critical violation) and kept as a screenshot in test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "train"))

from train_builders import chat_rows

from kifabrik import accounts
from kifabrik.ui import jobs
from kifabrik.workspace import Workspace
from tests.ui.clients import PASSWORD

#: long enough to be still training while the UI server restarts (the tiny model does a few steps a second)
STEPS = 150


def _setup(ws: Workspace, tiny_model_dir: Path) -> Workspace:
    from kifabrik.models.sources import add_model

    accounts.create_project(ws, "acme", title="Schmidt Maschinenbau")
    accounts.create_project(ws, "beta", title="Andere GmbH")
    for user, project, role in (("erika", "acme", "engineer"), ("paul", "acme", "approver"), ("bob", "beta", "admin")):
        accounts.create_user(ws, user, PASSWORD)
        accounts.grant(ws, user, project, role)
    acme = ws.scoped("acme")
    add_model(acme, str(tiny_model_dir), name="tiny")
    return acme


def _until(driver: Any, check: Callable[[Any], Any], timeout: float = 120, what: str = "") -> Any:
    """Poll until `check` is truthy; an element that the page replaced between find and read is looked up again."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.3,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(check, message=what)


def _sign_in(driver: Any, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _until(driver, lambda d: d.find_elements(By.ID, "username"), 30, "the sign-in form")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button[type=submit]").click()
    _until(driver, lambda d: "/login" not in d.current_url, 30, "signed in")


def _sign_out(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    _until(driver, lambda d: "/login" in d.current_url, 30, "signed out")


def _check(driver: Any, axe: Callable[[Any], list[dict[str, Any]]], screenshot: Callable[[Any, str], Path],
           name: str) -> None:
    """A screenshot of the page, and no serious or critical accessibility violation on it."""
    screenshot(driver, name)
    violations = axe(driver)
    assert violations == [], f"{name}: " + "; ".join(f"{v['id']}: {v['help']}" for v in violations)


def _select(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def _fill(driver: Any, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def _job_done(driver: Any, timeout: float = 300) -> str:
    """Wait on a job page until the live status (server-sent events) says the job ended; its status."""
    from selenium.webdriver.common.by import By

    final = ("succeeded", "failed", "cancelled", "interrupted")

    def ended(d: Any) -> str | None:
        status = d.find_element(By.ID, "job-status").get_attribute("data-status")
        return status if status in final else None

    return str(_until(driver, ended, timeout, "the job to end"))


def test_the_whole_journey_in_a_browser(ws: Workspace, home: Path, tiny_model_dir: Path, tmp_path: Path, ui_server,
                                        browser_factory, screenshot, axe) -> None:
    from selenium.webdriver.common.by import By

    acme = _setup(ws, tiny_model_dir)
    upload = tmp_path / "service-chats.jsonl"
    upload.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat_rows(24)), encoding="utf-8")
    server = ui_server(home)
    d = browser_factory()

    d.get(server.url + "/p/acme")
    _until(d, lambda d: "/login" in d.current_url, 30, "sent to the sign-in page")
    _check(d, axe, screenshot, "01-login")
    _sign_in(d, d.current_url, "erika")
    assert d.current_url.endswith("/p/acme")
    _check(d, axe, screenshot, "02-dashboard")

    # upload and import a dataset with a usage policy preset
    d.get(server.url + "/p/acme/datasets")
    d.find_element(By.ID, "f-files").send_keys(str(upload))
    _fill(d, "f-name", "service-chats")
    _select(d, "f-preset", "internal-only")
    _check(d, axe, screenshot, "03-datasets")
    d.find_element(By.ID, "f-files").find_element(By.XPATH, "ancestor::form").submit()
    _until(d, lambda d: "/artifacts/" in d.current_url, 120, "the dataset page")
    assert "service-chats" in d.find_element(By.TAG_NAME, "h1").text
    _check(d, axe, screenshot, "04-dataset-card")
    dataset = acme.catalog.get_artifact("service-chats", "dataset")

    # start a tiny training and watch it finish on the job page (live, without reloading)
    d.get(server.url + "/p/acme/jobs")
    _select(d, "train-base", acme.catalog.get_artifact("tiny").id)
    d.find_element(By.CSS_SELECTOR, f"input[name=data][value='{dataset.id}']").click()
    for field, value in (("train-name", "service-lora"), ("train-max_steps", "3"), ("train-learning_rate", "0,005"),
                         ("train-rank", "4"), ("train-batch_size", "2"), ("train-max_seq_length", "128")):
        _fill(d, field, value)
    _check(d, axe, screenshot, "05-training-form")
    d.find_element(By.ID, "train-base").find_element(By.XPATH, "ancestor::form").submit()
    _until(d, lambda d: "/jobs/" in d.current_url, 60, "the job page")
    assert _job_done(d) == "succeeded", d.find_element(By.ID, "job-log").text
    adapter = acme.catalog.get_artifact("service-lora", "adapter")
    _until(d, lambda d: adapter.id in d.page_source, 30, "the adapter among the results")
    _check(d, axe, screenshot, "06-job-finished")

    # evaluate the adapter as a job, then open its report
    d.get(server.url + "/p/acme/evaluations")
    _select(d, "eval-model", adapter.id)
    d.find_element(By.CSS_SELECTOR, "input[name=task][value='task:kifabrik:evaluate/data/tasks/werkstatt.yaml']").click()
    _fill(d, "eval-limit", "4")
    d.find_element(By.ID, "eval-model").find_element(By.XPATH, "ancestor::form").submit()
    _until(d, lambda d: "/jobs/" in d.current_url, 60, "the evaluation's job page")
    assert _job_done(d) == "succeeded", d.find_element(By.ID, "job-log").text
    (evaluation,) = acme.catalog.list_artifacts("evaluation")
    d.get(server.url + "/p/acme/evaluations")
    d.find_element(By.CSS_SELECTOR, f"a[href='/p/acme/evaluations/{evaluation.id}']").click()
    _until(d, lambda d: d.find_elements(By.CSS_SELECTOR, "iframe.report"), 30, "the report")
    _check(d, axe, screenshot, "07-evaluation-report")
    d.switch_to.frame(d.find_element(By.CSS_SELECTOR, "iframe.report"))
    assert "werkstatt" in d.page_source  # the report the evaluation stage wrote, inside the sandbox
    d.switch_to.default_content()

    # chat with the adapter: the answer streams in, with the AI disclosure
    d.get(server.url + "/p/acme/chat")
    _select(d, "chat-model", "service-lora")
    _fill(d, "chat-message", "Wie oft muss ich den Filter wechseln?")
    _fill(d, "chat-max-tokens", "12")
    d.find_element(By.ID, "chat-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _until(d, lambda d: d.find_element(By.ID, "chat-disclosure").is_displayed(), 180, "the answer")
    assert d.find_element(By.ID, "chat-answer").text.strip()
    _check(d, axe, screenshot, "08-chat")

    # request a release; a second user, an approver, approves it (four eyes)
    d.get(server.url + "/p/acme/releases")
    _select(d, "rel-artifact", adapter.id)
    _fill(d, "rel-name", "service-assistent")
    _fill(d, "rel-version", "1.0.0")
    _select(d, "rel-audience", "internal")
    _fill(d, "rel-license", "LicenseRef-internal")
    d.find_element(By.ID, "rel-artifact").find_element(By.XPATH, "ancestor::form").submit()
    (request,) = acme.catalog.release_requests()
    assert not d.find_elements(By.CSS_SELECTOR, f"form[action$='/releases/{request.id}/approve']")  # not hers
    _sign_out(d)
    _sign_in(d, server.url + "/p/acme/releases", "paul")
    _check(d, axe, screenshot, "09-release-request")
    d.find_element(By.CSS_SELECTOR, f"form[action$='/releases/{request.id}/approve'] button").click()
    _until(d, lambda d: acme.catalog.get_release_request(request.id).status not in ("pending", "approving"), 300, "the decision")
    decided = acme.catalog.get_release_request(request.id)
    assert (decided.status, decided.requested_by, decided.decided_by) == ("released", "erika", "paul"), decided.reason
    _check(d, axe, screenshot, "10-released")
    actors = {(e.action, e.actor) for e in acme.catalog.audit_entries()}
    assert {("release.request", "user:erika"), ("release.approve", "user:paul")} <= actors

    # lineage and audit log of the release
    d.get(server.url + f"/p/acme/artifacts/{decided.release_id}/lineage")
    assert "service-lora" in d.page_source and "service-chats" in d.page_source
    _check(d, axe, screenshot, "11-lineage")
    d.get(server.url + "/p/acme/audit")
    _check(d, axe, screenshot, "12-audit")
    for page in ("/models", "/documents", "/keys", "/members"):
        d.get(server.url + "/p/acme" + page)
        _check(d, axe, screenshot, "13" + page.replace("/", "-"))

    # a member of another project who types the URL of acme's dataset gets 404, and nothing of it
    _sign_out(d)
    _sign_in(d, server.url + "/", "bob")
    d.get(server.url + f"/p/acme/artifacts/{dataset.id}")
    assert "Nicht gefunden" in d.find_element(By.TAG_NAME, "h1").text and "service-chats" not in d.page_source
    _check(d, axe, screenshot, "14-not-found")


def test_a_training_goes_on_while_the_ui_server_restarts(ws: Workspace, home: Path, tiny_model_dir: Path, ui_server,
                                                         browser_factory, screenshot) -> None:
    from selenium.webdriver.common.by import By
    from train_builders import make_dataset

    acme = _setup(ws, tiny_model_dir)
    make_dataset(acme, "service-chats", chat_rows(24), chat_rows(4))
    server = ui_server(home)
    d = browser_factory(languages="en-GB,en")
    _sign_in(d, server.url + "/p/acme/jobs", "erika")
    _select(d, "train-base", acme.catalog.get_artifact("tiny").id)
    d.find_element(By.CSS_SELECTOR, "input[name=data]").click()
    for field, value in (("train-name", "long-lora"), ("train-max_steps", str(STEPS)), ("train-learning_rate", "0.005"),
                         ("train-rank", "4"), ("train-batch_size", "2"), ("train-max_seq_length", "128")):
        _fill(d, field, value)
    d.find_element(By.ID, "train-base").find_element(By.XPATH, "ancestor::form").submit()
    _until(d, lambda d: "/jobs/" in d.current_url, 60, "the job page")
    job_url = d.current_url
    (job,) = jobs.list_jobs(ws, "acme")
    _until(d, lambda d: jobs.progress(ws, jobs.get_job(ws, "acme", job.id)).get("step"), 240, "the first step")

    d.quit()  # the browser goes away ...
    assert jobs.get_job(ws, "acme", job.id).status == "running"
    restarted = datetime.now(UTC)
    server.restart()  # ... and the UI server restarts while the training runs
    d = browser_factory(languages="en-GB,en")
    _sign_in(d, job_url, "erika")  # the session lives in the catalog, but this is a new browser
    assert d.current_url == job_url
    assert _job_done(d, timeout=600) == "succeeded"
    screenshot(d, "15-job-after-restart")
    done = jobs.get_job(ws, "acme", job.id)
    progress = jobs.progress(ws, done)
    assert [s for s, _ in progress["loss"]] == list(range(1, STEPS + 1))  # every step once: nothing restarted
    assert datetime.fromisoformat(done.ended_at) > restarted  # it was still training when the server stopped
    assert acme.catalog.get_artifact("long-lora", "adapter").id in progress["outputs"]
