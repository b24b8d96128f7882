"""VE — reliability: domain accuracy on held-out items, robustness under perturbations,
consistency across repeated sampling.

MISSION KI: dimension VE (Verlässlichkeit), criteria VE1 (Leistungsfähigkeit und Robustheit:
tests with different inputs and conditions, robustness metrics) and VE2 (functional safety:
tests against malfunction). AI Act: Art. 15 (accuracy, robustness) — principle "technical
robustness and safety".
"""

from __future__ import annotations

from itertools import combinations

from kifabrik.evaluate.backends import GenOptions
from kifabrik.evaluate.metrics import token_f1
from kifabrik.evaluate.runner import TaskResult, run_task
from kifabrik.evaluate.suites import Suite, SuiteContext, SuiteResult, data_file
from kifabrik.evaluate.suites.perturb import KINDS, perturb_task
from kifabrik.evaluate.tasks import Task, load_task
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


def _run(ctx: SuiteContext) -> SuiteResult:
    tasks = domain_tasks(ctx)
    clean = [clean_result(ctx, t) for t in tasks]
    accuracy = _weighted([(r.metrics[r.main], len(r.samples)) for r in clean])
    per_kind: dict[str, dict[str, float]] = {}
    perturbed_results = []
    for kind in KINDS:
        drops, flips = [], []
        for task, base in zip(tasks, clean, strict=True):
            if task.spec.type == "judge":
                continue  # judging every perturbation would multiply the judge's work; accuracy covers it
            res = run_task(ctx.backend, perturb_task(task, kind, ctx.seed), seed=ctx.seed)
            perturbed_results.append(res)
            drops.append((base.metrics[base.main] - res.metrics[res.main], len(res.samples)))
            changed = sum(a["output"] != b["output"] for a, b in zip(base.samples, res.samples, strict=True))
            flips.append((changed / len(res.samples), len(res.samples)))
        if drops:
            per_kind[kind] = {"drop": _weighted(drops), "changed_answers": _weighted(flips)}
    metrics = {"ve.accuracy": accuracy}
    if per_kind:
        metrics["ve.robustness_drop"] = sum(v["drop"] for v in per_kind.values()) / len(per_kind)
        metrics["ve.worst_drop"] = max(v["drop"] for v in per_kind.values())
    consistency, samples = _consistency(ctx, tasks)
    metrics["ve.consistency"] = consistency
    cons_task = TaskResult("consistency", "generation", "consistency", {"consistency": consistency}, samples)
    notes = [f"domain items: {', '.join(f'{t.name} ({len(t.items)})' for t in tasks)}"
             + ("" if ctx.tasks else " — the built-in sample task; give your own with --task for real evidence")]
    return SUITE.result(metrics, tasks=clean + perturbed_results + [cons_task],
                        details={"perturbations": per_kind, "repeats": REPEATS, "temperature": TEMPERATURE},
                        notes=notes)


def _consistency(ctx: SuiteContext, tasks: list[Task]) -> tuple[float, list[dict]]:
    """Mean pairwise token F1 between `REPEATS` sampled answers to the same question (1 = always the same)."""
    items = [it for t in tasks for it in t.items][: ctx.cap(8)]
    answers = []
    for r in range(REPEATS):
        opts = GenOptions(max_new_tokens=32, temperature=TEMPERATURE, seed=ctx.seed + 1000 * (r + 1))
        answers.append(ctx.backend.generate([it.messages for it in items], opts, chat=True))
    samples = []
    for i, it in enumerate(items):
        outs = [answers[r][i] for r in range(REPEATS)]
        agree = [token_f1(a, [b]) for a, b in combinations(outs, 2)]
        score = sum(agree) / len(agree)
        samples.append({"id": it.id, "lang": it.lang, "prompt": it.prompt, "output": outs[0], "outputs": outs,
                        "score": score})
    return (sum(s["score"] for s in samples) / len(samples) if samples else float("nan")), samples


SUITE = Suite("ve", "Reliability: accuracy, robustness, consistency", "VE", ("VE1", "VE2"),
              "AI Act Art. 15 (accuracy, robustness) — technical robustness and safety", _run)
register("suite", "ve")(SUITE)
