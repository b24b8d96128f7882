"""Prüfung: the evaluation stage — a fast engine for tasks written in YAML, quality suites mapped to
the MISSION KI quality standard and the AI Act, verdicts per protection need, an HTML report.

    from kifabrik.evaluate import EvalOptions, evaluate
    evaluate(ws, "my-adapter", EvalOptions(suites=["all"], limit=10), baseline="base", report=Path("r.html"))

No torch import here: models load only when an evaluation runs.
"""

from kifabrik.evaluate.api import EvalOptions, Outcome, evaluate, prepare
from kifabrik.evaluate.tasks import Task, TaskSpec, build_task, load_task

__all__ = ["EvalOptions", "Outcome", "Task", "TaskSpec", "build_task", "evaluate", "load_task", "prepare"]
