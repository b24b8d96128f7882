"""Language coverage: the same kind of item scored per EU language, and the gap between languages.

MISSION KI: dimension VE, criterion VE1 (indicator VE1.5: tests with different inputs and
conditions — here the user's languages); a large gap also matters for ND1 when a language
group is served worse. AI Act: Art. 15(1) (consistent accuracy) — principle "diversity,
non-discrimination and fairness".

The suite adds no items of its own: it groups the samples of every suite and task that ran
before it by the item's language (tasks whose items exist in one language only are skipped)
and reports per task and language the mean score with its count and interval, and the largest
gap with a bootstrap interval (each task and language resampled on its own). A gap between
languages that all score at chance level says nothing: unless some language of every task
clears the task's chance rate, the gap is recorded as not meaningful.
"""

from __future__ import annotations

from typing import Any

from kifabrik.evaluate.runner import TaskResult
from kifabrik.evaluate.stats import Measured, exact, stratified_interval
from kifabrik.evaluate.suites import Suite, SuiteContext, SuiteResult
from kifabrik.registry import register

MIN_ITEMS = 2


def _run(ctx: SuiteContext) -> SuiteResult:
    per_task: dict[str, dict[str, dict[str, Any]]] = {}
    sources: dict[str, TaskResult] = {}
    for task in [t for suite in ctx.results.values() for t in suite.tasks] + list(ctx.cache.values()):
        if task.name in sources or "~" in task.name:
            continue  # perturbed copies repeat their clean task
        sources[task.name] = task
        langs = {k: v for k, v in task.by_lang.items() if v["n"] >= MIN_ITEMS}
        if len(langs) >= 2:
            per_task[task.name] = langs
    if not per_task:
        return SUITE.result({}, measured=False, notes=["no task had items in two or more languages "
                                                       f"(at least {MIN_ITEMS} each); run it with other suites"])
    gaps = {name: max(v["score"] for v in langs.values()) - min(v["score"] for v in langs.values())
            for name, langs in per_task.items()}
    languages = sorted({lang for langs in per_task.values() for lang in langs})
    # every (task, language) group of item scores, resampled on its own
    groups: list[list[float]] = []
    spans: list[tuple[int, int]] = []
    for name, langs in per_task.items():
        first = len(groups)
        groups += [[float(s["score"]) for s in sources[name].samples if s.get("lang") == lang] for lang in langs]
        spans.append((first, len(groups)))
    interval = stratified_interval(groups, lambda means: max(max(means[a:b]) - min(means[a:b]) for a, b in spans),
                                   seed=ctx.seed)
    gap = Measured(max(gaps.values()), sum(len(g) for g in groups), interval, "bootstrap", seed=ctx.seed)
    flat = [name for name, langs in per_task.items()
            if not any(v.get("ci_low", 0.0) > (sources[name].chance or 0.0) for v in langs.values())]
    notes = []
    if flat:
        why = (f"no language of {', '.join(flat)} scores significantly above chance, so a small gap between "
               "them shows nothing")
        gap = gap.caveat(why)
        notes.append(f"language gap not meaningful: {why}")
    metrics: dict[str, float] = {"lang.gap": gap, "lang.languages": exact(float(len(languages)), len(languages))}
    return SUITE.result(metrics, details={"per_task": per_task, "gaps": gaps, "languages": languages}, notes=notes)


SUITE = Suite("lang", "Language coverage: scores per language", "VE", ("VE1",),
              "AI Act Art. 15(1) (consistent accuracy) — diversity, non-discrimination and fairness", _run)
register("suite", "lang")(SUITE)
