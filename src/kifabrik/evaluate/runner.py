"""Running one task on one backend: multiple choice, generation, LLM-as-judge.

Each run returns a `TaskResult`: aggregate metrics, metrics per language (and per item `kind`),
and one log row per sample (prompt, choice log-likelihoods or the answer, the scores) for the
evaluation record and the report. Every aggregate metric is a `Measured` value: it carries its
item count and 95 % interval (Wilson for proportions, a seeded bootstrap for means and corpus
chrF; see `stats.py`), recorded as the task's `stats`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from kifabrik import progress
from kifabrik.errors import KifabrikError
from kifabrik.evaluate.backends import Backend, GenOptions
from kifabrik.evaluate.metrics import (
    best_chrf_stats,
    chrf_from_stats,
    corpus_chrf,
    facts_metrics,
    facts_outcome,
    softmax,
)
from kifabrik.evaluate.stats import (
    Measured,
    bootstrap_sum_interval,
    mean_of,
    proportion,
    proportion_of,
    stats_of,
)
from kifabrik.evaluate.tasks import Task
from kifabrik.registry import lookup


@dataclass
class TaskResult:
    """Scores of one task. `main` names the metric the report and the verdict use."""

    name: str
    type: str
    main: str
    metrics: dict[str, float]
    samples: list[dict[str, Any]]
    by_lang: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    by_kind: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.type, "main": self.main, "metrics": self.metrics,
               "stats": stats_of(self.metrics), "n": len(self.samples), "by_lang": self.by_lang,
               "seconds": round(self.seconds, 2), "notes": self.notes}
        if self.by_kind:
            out["by_kind"] = self.by_kind
        return out

    @property
    def chance(self) -> float | None:
        """The chance rate of the main metric (multiple choice: mean of 1/choices), when known."""
        main = self.metrics.get(self.main)
        return main.chance if isinstance(main, Measured) else None


def run_task(backend: Backend, task: Task, *, judge: Backend | None = None, temperature: float = 0.0,
             seed: int = 0) -> TaskResult:
    """Evaluate `task` with `backend` (and `judge` for judge tasks)."""
    start = time.perf_counter()
    if task.spec.type == "multiple_choice":
        result = _multiple_choice(backend, task)
    elif task.spec.type == "generation":
        result = _generation(backend, task, temperature, seed)
    else:
        if judge is None:
            raise KifabrikError(f"task {task.name!r} needs a judge model",
                                hint="name one in the task (`judge: {model: ...}`) or with --judge MODEL")
        result = _judged(backend, judge, task, temperature, seed)
    result.seconds = time.perf_counter() - start
    binary = isinstance(main := result.metrics.get(result.main), Measured) and main.method == "wilson"
    result.by_lang = per_group(result.samples, "lang", binary=binary, seed=seed)
    if any(s.get("kind") for s in result.samples):
        result.by_kind = per_kind(result, binary=binary, seed=seed)
    result.notes += list(getattr(backend, "notes", []))
    return result


def score_of(scores: list[float], *, binary: bool, seed: int = 0, chance: float | None = None) -> Measured:
    """Mean item score: a proportion (Wilson) when the scores are right/wrong, else bootstrapped."""
    return proportion_of(scores, chance=chance) if binary else mean_of(scores, seed=seed, chance=chance)


def per_group(samples: list[dict[str, Any]], key: str, *, binary: bool, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Mean score, count and 95 % interval per value of `key` (samples without one are left out)."""
    groups: dict[str, list[float]] = {}
    for s in samples:
        if s.get(key):
            groups.setdefault(str(s[key]), []).append(float(s["score"]))
    out = {}
    for name, scores in sorted(groups.items()):
        m = score_of(scores, binary=binary, seed=seed)
        out[name] = {"score": float(m), "n": m.n, "ci_low": m.ci_low, "ci_high": m.ci_high}
    return out


def per_kind(result: TaskResult, *, binary: bool, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per item `kind`: the facts metrics for a facts task, else the main score; each with n and interval."""
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted({str(s["kind"]) for s in result.samples if s.get("kind")}):
        part = [s for s in result.samples if str(s.get("kind")) == kind]
        if any("refused" in s for s in part):
            metrics = facts_metrics(part)
        else:
            metrics = {result.main: score_of([float(s["score"]) for s in part], binary=binary, seed=seed)}
        out[kind] = {"n": len(part), "metrics": {k: float(v) for k, v in metrics.items()}, "stats": stats_of(metrics)}
    return out


def _multiple_choice(backend: Backend, task: Task) -> TaskResult:
    spec = task.spec
    chat = spec.uses_chat()
    inputs = [(it.messages if chat else it.prompt, it.choices) for it in task.items]
    with progress.bar(f"{task.name}: multiple choice", len(inputs)) as advance:
        scores = backend.loglikelihoods(inputs, chat=chat, delimiter=spec.target_delimiter, progress=advance)
    samples: list[dict[str, Any]] = []
    for it, row in zip(task.items, scores, strict=True):
        lls = [s.loglik for s in row]
        pred = max(range(len(lls)), key=lambda i: lls[i])
        # lm-evaluation-harness: acc_norm divides by the choice's length in characters, acc_bytes in UTF-8 bytes
        norm = [ll / len(c) for ll, c in zip(lls, it.choices, strict=True)]
        by_bytes = [ll / len(c.encode("utf-8")) for ll, c in zip(lls, it.choices, strict=True)]
        pred_norm = max(range(len(norm)), key=lambda i: norm[i])
        pred_bytes = max(range(len(by_bytes)), key=lambda i: by_bytes[i])
        probs = softmax(lls)
        samples.append({
            "id": it.id, "lang": it.lang, "prompt": it.prompt, "choices": it.choices, "gold": it.gold,
            "logliks": [round(x, 6) for x in lls], "is_greedy": [s.is_greedy for s in row],
            "tokens": [s.tokens for s in row], "pred": pred, "pred_norm": pred_norm, "pred_bytes": pred_bytes,
            "confidence": round(probs[pred], 6), "acc": float(pred == it.gold), "acc_norm": float(pred_norm == it.gold),
            "acc_bytes": float(pred_bytes == it.gold), "score": float(pred == it.gold), "output": it.choices[pred],
            "fields": {k: v for k, v in it.fields.items() if k not in (spec.choices_field,)},
        })
        if it.kind:
            samples[-1]["kind"] = it.kind
    n = len(samples)
    chance = sum(1 / len(it.choices) for it in task.items) / n  # a uniform random guess per item
    metrics: dict[str, float] = {m: proportion(int(sum(s[m] for s in samples)), n, chance=chance)
                                 for m in ("acc", "acc_norm", "acc_bytes")}
    return TaskResult(task.name, "multiple_choice", "acc", metrics, samples)


def generate_answers(backend: Backend, task: Task, temperature: float = 0.0, seed: int = 0,
                     label: str = "generation") -> list[str]:
    spec = task.spec
    opts = GenOptions(spec.max_new_tokens, temperature, seed, tuple(spec.stop))
    prompts = [it.messages for it in task.items]
    with progress.bar(f"{task.name}: {label}", len(prompts)) as advance:
        return backend.generate(prompts, opts, chat=spec.uses_chat(), progress=advance)


def _generation(backend: Backend, task: Task, temperature: float, seed: int) -> TaskResult:
    spec = task.spec
    answers = generate_answers(backend, task, temperature, seed)
    samples: list[dict[str, Any]] = []
    for it, answer in zip(task.items, answers, strict=True):
        scores = {m: lookup("metric", m)(answer, it.references, task, item=it) for m in spec.metrics}
        main = spec.metrics[0]
        sample = {"id": it.id, "lang": it.lang, "prompt": it.prompt, "output": answer,
                  "references": it.references, "scores": scores, "score": scores[main]}
        if it.kind:
            sample["kind"] = it.kind
        if "facts" in spec.metrics:
            outcome = facts_outcome(answer, it.checks, bool(it.answerable))
            sample.update(answerable=it.answerable, checks_met=outcome.checks_met, refused=outcome.refused)
        samples.append(sample)
    metrics: dict[str, float] = {}
    for m in spec.metrics:
        values = [s["scores"][m] for s in samples]
        if m == "facts":
            metrics.update(facts_metrics(samples))
        elif m in PROPORTIONS:
            metrics[m] = proportion_of(values, chance=0.0)
        else:
            metrics[m] = mean_of(values, seed=seed)
    if "chrf" in spec.metrics:
        metrics["chrf_sentence_mean"] = metrics["chrf"]
        metrics["chrf"] = corpus_chrf_measured([(s["output"], s["references"]) for s in samples], seed)
    # a facts task without answerable items has no `facts` figure; its first other metric leads then
    lead = spec.metrics[0] if spec.metrics[0] in metrics else next(iter(metrics))
    return TaskResult(task.name, "generation", lead, metrics, samples)


#: generation metrics whose item scores are right (1) or wrong (0)
PROPORTIONS = {"exact_match", "contains", "regex", "facts"}


def corpus_chrf_measured(pairs: list[tuple[str, list[str]]], seed: int = 0) -> Measured:
    """Corpus chrF with a bootstrap interval over the items (statistics re-summed per resample)."""
    vectors = [best_chrf_stats(hyp, refs) for hyp, refs in pairs]
    interval = bootstrap_sum_interval(vectors, lambda total: chrf_from_stats([int(x) for x in total]) / 100, seed=seed)
    return Measured(corpus_chrf(pairs), len(pairs), interval, "bootstrap", chance=0.0, seed=seed)


JUDGE_PROMPT = """You are grading an answer of an AI assistant.

Question:
{question}

{reference}Answer to grade:
{answer}

Rubric:
{rubric}

Grade the answer on a scale from 1 (worst) to {scale} (best) following the rubric.
Reply with one line of reasoning, then a last line of the form "SCORE: <number>"."""

_SCORE = re.compile(r"(?:SCORE|Score|score|BEWERTUNG|Bewertung)\s*[:=]\s*(\d+(?:\.\d+)?)")


def parse_judge_score(text: str, scale: int) -> float | None:
    """The judge's score: the last `SCORE: n`; else a lone number in range; None when unreadable."""
    found = _SCORE.findall(text)
    if not found:
        found = [n for n in re.findall(r"\b(\d+)\b", text) if 1 <= int(n) <= scale][-1:]
    if not found:
        return None
    value = float(found[-1])
    return value if 1 <= value <= scale else None


def _judged(backend: Backend, judge: Backend, task: Task, temperature: float, seed: int) -> TaskResult:
    spec = task.spec
    assert spec.judge is not None
    answers = generate_answers(backend, task, temperature, seed)
    prompts = []
    for it, answer in zip(task.items, answers, strict=True):
        ref = f"Reference answer:\n{it.references[0]}\n\n" if it.references else ""
        text = JUDGE_PROMPT.format(question=it.prompt, reference=ref, answer=answer, rubric=spec.judge.rubric,
                                   scale=spec.judge.scale)
        prompts.append([{"role": "user", "content": text}])
    with progress.bar(f"{task.name}: judging", len(prompts)) as advance:
        verdicts = judge.generate(prompts, GenOptions(max_new_tokens=96), chat=True, progress=advance)
    samples: list[dict[str, Any]] = []
    unreadable = 0
    threshold = spec.judge.threshold()
    for it, answer, verdict in zip(task.items, answers, verdicts, strict=True):
        value = parse_judge_score(verdict, spec.judge.scale)
        unreadable += value is None
        grade = value if value is not None else 1.0  # an unreadable verdict counts as the lowest grade
        samples.append({"id": it.id, "lang": it.lang, "prompt": it.prompt, "output": answer, "references": it.references,
                        "judge_output": verdict, "judge_score": value, "passed": grade >= threshold,
                        "score": (grade - 1) / (spec.judge.scale - 1)})
    n = len(samples)
    metrics: dict[str, float] = {"judge_pass_rate": proportion_of([s["passed"] for s in samples], chance=0.0),
                                 "judge_mean": mean_of([s["score"] for s in samples], seed=seed),
                                 "judge_unreadable": proportion(unreadable, n)}
    result = TaskResult(task.name, "judge", "judge_pass_rate", metrics, samples)
    if unreadable:
        result.notes.append(f"{unreadable} of {n} judge verdicts had no readable score and count as the lowest grade")
    return result
