"""VE — reliability: domain accuracy on held-out items, robustness under perturbations,
consistency across repeated sampling.

MISSION KI: dimension VE (Verlässlichkeit), criteria VE1 (Leistungsfähigkeit und Robustheit:
tests with different inputs and conditions, robustness metrics) and VE2 (functional safety:
tests against malfunction). AI Act: Art. 15 (accuracy, robustness) — principle "technical
robustness and safety".

Every figure carries its item count and 95 % interval: accuracy pooled over the domain tasks
(Wilson when every task scores right/wrong), drops and consistency bootstrapped over the items.
A robustness drop only means something for a model that answers better than chance: when the
clean accuracy's interval does not clear the chance rate, the drop is recorded as not
meaningful, and `kifabrik.mission_ki` gives it no level above D.
"""

from __future__ import annotations

from functools import partial
from itertools import combinations
from typing import Any

from kifabrik.evaluate.backends import GenOptions
from kifabrik.evaluate.metrics import token_f1
from kifabrik.evaluate.runner import TaskResult, run_task
from kifabrik.evaluate.stats import Measured, bootstrapped, mean_of, proportion
from kifabrik.evaluate.suites import Suite, SuiteContext, SuiteResult, data_file
from kifabrik.evaluate.suites.perturb import KINDS, perturb_task
from kifabrik.evaluate.tasks import Task, load_task
from kifabrik.mission_ki import chance_caveat
from kifabrik.registry import register

REPEATS = 3
TEMPERATURE = 0.7


def domain_tasks(ctx: SuiteContext) -> list[Task]:
    """The user's tasks (or held-out dataset items); the built-in `werkstatt` task otherwise."""
    tasks = ctx.tasks or [load_task(data_file("tasks/werkstatt.yaml"))]
    return [t.limited(ctx.limit) for t in tasks]


def clean_result(ctx: SuiteContext, task: Task) -> TaskResult:
    """The unperturbed result of a task, computed once per evaluation and shared with other suites."""
    if task.name not in ctx.cache:
        ctx.cache[task.name] = run_task(ctx.backend, task, judge=ctx.judge, seed=ctx.seed)
    return ctx.cache[task.name]


def _weighted(pairs: list[tuple[float, int]]) -> float:
    total = sum(n for _, n in pairs)
    return sum(v * n for v, n in pairs) / total if total else float("nan")


def _count(result: TaskResult) -> int:
    main = result.metrics[result.main]
    return main.n if isinstance(main, Measured) else len(result.samples)


def pooled_accuracy(clean: list[TaskResult], seed: int = 0) -> Measured:
    """The main metric of every domain task, weighted by its item count, with its interval and chance rate."""
    pairs = [(float(r.metrics[r.main]), _count(r)) for r in clean]
    value, total = _weighted(pairs), sum(n for _, n in pairs)
    chance = _weighted([(r.chance or 0.0, _count(r)) for r in clean])
    mains = [r.metrics[r.main] for r in clean]
    if all(isinstance(m, Measured) and m.method == "wilson" for m in mains):
        successes = sum(round(float(m) * m.n) for m in mains if isinstance(m, Measured))
        pooled = proportion(successes, total, chance=chance)
        return Measured(value, total, (pooled.ci_low, pooled.ci_high), "wilson", chance=chance)
    scores = [float(s["score"]) for r in clean for s in r.samples]
    spread_ = mean_of(scores, seed=seed)
    return Measured(value, total, (spread_.ci_low, spread_.ci_high), "bootstrap", chance=chance, seed=seed)


def _drops(rows: list[dict[str, Any]], kinds: list[str], worst: bool = False) -> float:
    """Mean (or worst) over perturbation kinds of the mean clean-minus-perturbed item score."""
    if not rows:
        return float("nan")
    per = [sum(r["clean"] - r[k] for r in rows) / len(rows) for k in kinds]
    return max(per) if worst else sum(per) / len(per)


def _run(ctx: SuiteContext) -> SuiteResult:
    tasks = domain_tasks(ctx)
    clean = [clean_result(ctx, t) for t in tasks]
    accuracy = pooled_accuracy(clean, ctx.seed)
    per_kind: dict[str, dict[str, Any]] = {}
    perturbed_results = []
    scored = [(t, b) for t, b in zip(tasks, clean, strict=True) if t.spec.type != "judge"]
    # one row per item: its clean score and its score under every perturbation (paired for the bootstrap)
    rows = [{"clean": float(s["score"])} for _, base in scored for s in base.samples]
    for kind in KINDS:
        drops, flips, at = [], 0, 0
        for task, base in scored:  # judging every perturbation would multiply the judge's work; accuracy covers it
            res = run_task(ctx.backend, perturb_task(task, kind, ctx.seed), seed=ctx.seed)
            perturbed_results.append(res)
            drops.append((float(base.metrics[base.main]) - float(res.metrics[res.main]), len(res.samples)))
            flips += sum(a["output"] != b["output"] for a, b in zip(base.samples, res.samples, strict=True))
            for s in res.samples:
                rows[at][kind] = float(s["score"])
                at += 1
        if drops:
            drop = bootstrapped(_weighted(drops), rows, partial(_drops, kinds=[kind]), seed=ctx.seed)
            changed = proportion(flips, len(rows))
            per_kind[kind] = {"drop": float(drop), "changed_answers": float(changed), "n": len(rows),
                              "stats": {"drop": drop.stats(), "changed_answers": changed.stats()}}
    metrics: dict[str, float] = {"ve.accuracy": accuracy}
    why = ""
    if per_kind:
        kinds = list(per_kind)
        mean_drop = sum(v["drop"] for v in per_kind.values()) / len(per_kind)
        worst = max(v["drop"] for v in per_kind.values())
        robust = bootstrapped(mean_drop, rows, partial(_drops, kinds=kinds), seed=ctx.seed)
        worst_m = bootstrapped(worst, rows, partial(_drops, kinds=kinds, worst=True), seed=ctx.seed)
        why = chance_caveat("the clean accuracy ve.accuracy", accuracy.measurement())
        metrics["ve.robustness_drop"] = robust.caveat(why) if why else robust
        metrics["ve.worst_drop"] = worst_m.caveat(why) if why else worst_m
    consistency, samples = _consistency(ctx, tasks)
    metrics["ve.consistency"] = consistency
    cons_task = TaskResult("consistency", "generation", "consistency", {"consistency": consistency}, samples)
    notes = [f"domain items: {', '.join(f'{t.name} ({len(t.items)})' for t in tasks)}"
             + ("" if ctx.tasks else " — the built-in sample task; give your own with --task for real evidence")]
    if why:
        notes.append(f"robustness drop not meaningful: {why}")
    return SUITE.result(metrics, tasks=clean + perturbed_results + [cons_task],
                        details={"perturbations": per_kind, "repeats": REPEATS, "temperature": TEMPERATURE},
                        notes=notes)


def _consistency(ctx: SuiteContext, tasks: list[Task]) -> tuple[Measured, list[dict[str, Any]]]:
    """Mean pairwise token F1 between `REPEATS` sampled answers to the same question (1 = always the same)."""
    items = [it for t in tasks for it in t.items][: ctx.cap(8)]
    answers = []
    for r in range(REPEATS):
        opts = GenOptions(max_new_tokens=32, temperature=TEMPERATURE, seed=ctx.seed + 1000 * (r + 1))
        answers.append(ctx.backend.generate([it.messages for it in items], opts, chat=True))
    samples: list[dict[str, Any]] = []
    for i, it in enumerate(items):
        outs = [answers[r][i] for r in range(REPEATS)]
        agree = [token_f1(a, [b]) for a, b in combinations(outs, 2)]
        score = sum(agree) / len(agree)
        samples.append({"id": it.id, "lang": it.lang, "prompt": it.prompt, "output": outs[0], "outputs": outs,
                        "score": score})
    return mean_of([s["score"] for s in samples], seed=ctx.seed), samples


SUITE = Suite("ve", "Reliability: accuracy, robustness, consistency", "VE", ("VE1", "VE2"),
              "AI Act Art. 15 (accuracy, robustness) — technical robustness and safety", _run)
register("suite", "ve")(SUITE)
