"""Running one task on one backend: multiple choice, generation, LLM-as-judge.

Each run returns a `TaskResult`: aggregate metrics, metrics per language, and one log row
per sample (prompt, choice log-likelihoods or the answer, the scores) for the evaluation
record and the report.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from kifabrik import progress
from kifabrik.errors import KifabrikError
from kifabrik.evaluate.backends import Backend, GenOptions
from kifabrik.evaluate.metrics import corpus_chrf, softmax
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
    by_lang: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "main": self.main, "metrics": self.metrics,
                "n": len(self.samples), "by_lang": self.by_lang, "seconds": round(self.seconds, 2), "notes": self.notes}


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
    result.by_lang = per_language(result.samples)
    result.notes += list(getattr(backend, "notes", []))
    return result


def per_language(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean score and count per item language (items without a language are left out)."""
    groups: dict[str, list[float]] = {}
    for s in samples:
        if s.get("lang"):
            groups.setdefault(s["lang"], []).append(float(s["score"]))
    return {lang: {"score": sum(v) / len(v), "n": len(v)} for lang, v in sorted(groups.items())}


def _multiple_choice(backend: Backend, task: Task) -> TaskResult:
    spec = task.spec
    chat = spec.uses_chat()
    inputs = [(it.messages if chat else it.prompt, it.choices) for it in task.items]
    with progress.bar(f"{task.name}: multiple choice", len(inputs)) as advance:
        scores = backend.loglikelihoods(inputs, chat=chat, delimiter=spec.target_delimiter, progress=advance)
    samples = []
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
    n = len(samples)
    metrics = {m: sum(s[m] for s in samples) / n for m in ("acc", "acc_norm", "acc_bytes")}
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
    samples = []
    for it, answer in zip(task.items, answers, strict=True):
        scores = {m: lookup("metric", m)(answer, it.references, task) for m in spec.metrics}
        main = spec.metrics[0]
        samples.append({"id": it.id, "lang": it.lang, "prompt": it.prompt, "output": answer,
                        "references": it.references, "scores": scores, "score": scores[main]})
    n = len(samples)
    metrics = {m: sum(s["scores"][m] for s in samples) / n for m in spec.metrics}
    if "chrf" in spec.metrics:
        metrics["chrf_sentence_mean"] = metrics["chrf"]
        metrics["chrf"] = corpus_chrf([(s["output"], s["references"]) for s in samples])
    return TaskResult(task.name, "generation", spec.metrics[0], metrics, samples)


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
    samples = []
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
    metrics = {"judge_pass_rate": sum(s["passed"] for s in samples) / n,
               "judge_mean": sum(s["score"] for s in samples) / n,
               "judge_unreadable": unreadable / n}
    result = TaskResult(task.name, "judge", "judge_pass_rate", metrics, samples)
    if unreadable:
        result.notes.append(f"{unreadable} of {n} judge verdicts had no readable score and count as the lowest grade")
    return result
