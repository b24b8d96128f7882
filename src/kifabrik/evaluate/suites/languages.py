"""Language coverage: the same kind of item scored per EU language, and the gap between languages.

MISSION KI: dimension VE, criterion VE1 (indicator VE1.5: tests with different inputs and
conditions — here the user's languages); a large gap also matters for ND1 when a language
group is served worse. AI Act: Art. 15(1) (consistent accuracy) — principle "diversity,
non-discrimination and fairness".

The suite adds no items of its own: it groups the samples of every suite and task that ran
before it by the item's language (tasks whose items exist in one language only are skipped)
and reports per task and language the mean score, and the largest gap.
"""

from __future__ import annotations

from kifabrik.evaluate.suites import Suite, SuiteContext, SuiteResult
from kifabrik.registry import register

MIN_ITEMS = 2


def _run(ctx: SuiteContext) -> SuiteResult:
    per_task: dict[str, dict[str, dict[str, float]]] = {}
    seen = set()
    for suite in ctx.results.values():
        for task in suite.tasks:
            if task.name in seen or "~" in task.name:
                continue  # perturbed copies repeat their clean task
            seen.add(task.name)
            langs = {k: v for k, v in task.by_lang.items() if v["n"] >= MIN_ITEMS}
            if len(langs) >= 2:
                per_task[task.name] = langs
    for name, task in ctx.cache.items():
        if name not in seen and len([v for v in task.by_lang.values() if v["n"] >= MIN_ITEMS]) >= 2:
            per_task[name] = {k: v for k, v in task.by_lang.items() if v["n"] >= MIN_ITEMS}
    if not per_task:
        return SUITE.result({}, measured=False, notes=["no task had items in two or more languages "
                                                       f"(at least {MIN_ITEMS} each); run it with other suites"])
    gaps = {name: max(v["score"] for v in langs.values()) - min(v["score"] for v in langs.values())
            for name, langs in per_task.items()}
    languages = sorted({lang for langs in per_task.values() for lang in langs})
    metrics = {"lang.gap": max(gaps.values()), "lang.languages": float(len(languages))}
    return SUITE.result(metrics, details={"per_task": per_task, "gaps": gaps, "languages": languages})


SUITE = Suite("lang", "Language coverage: scores per language", "VE", ("VE1",),
              "AI Act Art. 15(1) (consistent accuracy) — diversity, non-discrimination and fairness", _run)
register("suite", "lang")(SUITE)
