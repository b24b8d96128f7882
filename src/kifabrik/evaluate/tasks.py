"""Evaluation tasks: a YAML file (what to ask, how to score) plus items (JSONL, inline, or a dataset).

A subject expert writes, without Python:

    name: wartung-mc
    type: multiple_choice            # or generation, judge
    language: de
    items: wartung.jsonl             # {"question": ..., "choices": [...], "answer": 0 | "text"}
    prompt: "Frage: {{ question }}\\nAntwort:"

Generation tasks scored with `metrics: [facts]` need no reference answers; each item states
whether the question can be answered from the company's information and what a right answer
contains:

    {"id": "f1", "kind": "wartung", "question": "...", "answerable": true,
     "checks": {"all": ["500"], "any": ["Betriebsstunden", "Stunden"], "regex": null}}

Every problem (schema, a template field an item lacks, an answer that is not among the
choices, bad checks, an empty task) is reported with file:line before any model is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jinja2
from pydantic import Field, ValidationError, model_validator

from kifabrik.config import StrictModel, load_yaml, validation_messages
from kifabrik.errors import KifabrikError

TaskType = Literal["multiple_choice", "generation", "judge"]
GenMetric = Literal["exact_match", "contains", "regex", "token_f1", "chrf", "facts"]
#: metrics that compare the answer with reference answers (the others read the task or the item)
REFERENCE_METRICS = {"exact_match", "contains", "token_f1", "chrf"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


class JudgeSpec(StrictModel):
    """LLM-as-judge: another model grades each answer against a rubric."""

    rubric: str = Field(min_length=1, description="What a good answer does; shown to the judge with the question.")
    scale: int = Field(default=5, ge=2, le=10, description="Scores run from 1 to `scale`.")
    pass_score: int | None = Field(default=None, ge=1, description="Score counted as a pass (default: 60% of the scale).")
    model: str | None = Field(default=None, description="Judge: a registered model/adapter or an http(s) endpoint URL. "
                                                        "Default: the judge given on the command line.")

    def threshold(self) -> int:
        return self.pass_score or max(1, round(0.6 * self.scale))


class DatasetItems(StrictModel):
    """Items taken from a dataset artifact (chat rows: the last assistant message is the reference)."""

    dataset: str = Field(description="Dataset artifact: name, name@version or id.")
    split: Literal["test", "train"] = Field(default="test", description="Which split to read (held-out data: test).")


class TaskSpec(StrictModel):
    """One evaluation task as written in a task YAML file."""

    name: str = Field(description="Task name (letters, digits, . _ -).")
    description: str | None = Field(default=None, description="What the task checks, in words.")
    type: TaskType = Field(description="multiple_choice (log-likelihood), generation (metrics) or judge (LLM-as-judge).")
    language: str | None = Field(default=None, description="Language code of the items (an item's `lang` wins).")
    items: str | DatasetItems | list[dict[str, Any]] = Field(
        description="A JSONL file (relative to the task file), {dataset: REF, split: test}, or a list of items.")
    prompt: str = Field(default="{{ question }}", description="Jinja template of the prompt; item fields as variables.")
    system: str | None = Field(default=None, description="System message (used with the chat template).")
    chat_template: bool | None = Field(default=None, description="Send the prompt through the model's chat template. "
                                                                 "Default: no for multiple choice, yes otherwise.")
    choices_field: str = Field(default="choices", description="Item field with the list of choices.")
    answer_field: str = Field(default="answer", description="Item field with the answer: a choice index or text; "
                                                            "for generation a reference string or a list of them.")
    target_delimiter: str = Field(default=" ", description="Put between prompt and choice (as lm-evaluation-harness).")
    metrics: list[GenMetric] = Field(default_factory=lambda: list[GenMetric](["exact_match"]),
                                     description="Generation metrics.")
    regex: str | None = Field(default=None, description="Pattern for the `regex` metric (the answer must match).")
    max_new_tokens: int = Field(default=64, ge=1, le=4096, description="Most tokens generated per answer.")
    stop: list[str] = Field(default_factory=list, description="Cut the answer at the first of these strings.")
    judge: JudgeSpec | None = Field(default=None, description="Rubric and judge for type `judge`.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N items.")

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '.', '_' and '-'")
        if self.type == "judge" and self.judge is None:
            raise ValueError("type judge needs a `judge:` section with a rubric")
        if "facts" in self.metrics and self.type != "generation":
            raise ValueError("metric facts scores generated answers: use it with type generation")
        if "regex" in self.metrics:
            if not self.regex:
                raise ValueError("metric regex needs a `regex:` pattern")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        try:
            _ENV.parse(self.prompt)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"prompt template: {exc.message} (template line {exc.lineno})") from None
        return self

    def uses_chat(self) -> bool:
        return self.chat_template if self.chat_template is not None else self.type != "multiple_choice"


class FactChecks(NamedTuple):
    """What a right answer contains: every `all` string, one `any` string (when given), the `regex`."""

    all: tuple[str, ...] = ()
    any: tuple[str, ...] = ()
    regex: str | None = None


@dataclass(frozen=True)
class Item:
    """One rendered item. `messages` is the conversation sent to chat models; `kind` groups items
    in the results; `answerable` and `checks` are the item's `facts` fields."""

    id: str
    lang: str | None
    fields: dict[str, Any]
    prompt: str
    messages: list[dict[str, str]]
    choices: list[str] = field(default_factory=list)
    gold: int | None = None
    references: list[str] = field(default_factory=list)
    where: str = ""
    kind: str | None = None
    answerable: bool | None = None
    checks: FactChecks | None = None


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    items: list[Item]
    source: str
    dataset_ids: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def limited(self, limit: int | None) -> Task:
        n = min(x for x in (limit, self.spec.limit, len(self.items)) if x is not None)
        return replace(self, items=self.items[:n])


def load_task(path: str | Path, *, ws: Any = None) -> Task:
    """Read and check a task file completely; raise one error listing every problem."""
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise KifabrikError(f"{path}: a task file must be a YAML mapping with name, type and items",
                            hint="see 'Evaluation tasks' in the README; examples ship as "
                                 "kifabrik:recipes/tasks/schmidt-fakten.yaml and kifabrik:evaluate/data/tasks/werkstatt.yaml")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise KifabrikError(f"{path}: the task file is invalid:\n  " + "\n  ".join(validation_messages(exc, data, str(path))),
                            hint="fix these and run again; nothing was computed") from None
    return build_task(spec, base=path.parent, source=str(path), ws=ws)


def build_task(spec: TaskSpec, *, base: Path | None = None, source: str = "<task>", ws: Any = None) -> Task:
    """Load and render a validated spec's items (file, inline list or dataset)."""
    dataset_ids: list[str] = []
    if isinstance(spec.items, str):
        items_path = (base or Path.cwd()) / spec.items
        raw = read_jsonl(items_path)
        where = str(items_path)
    elif isinstance(spec.items, list):
        raw = [(i + 1, row) for i, row in enumerate(spec.items)]
        where = f"{source} items"
    else:
        raw, dataset_id = _dataset_rows(ws, spec.items, spec)
        dataset_ids.append(dataset_id)
        where = f"dataset {spec.items.dataset} ({spec.items.split})"
    if spec.limit:
        raw = raw[: spec.limit]
    if not raw:
        raise KifabrikError(f"{source}: task {spec.name!r} has no items ({where} is empty)",
                            hint="add items; an empty task would score nothing")
    problems: list[str] = []
    items = []
    for line, row in raw:
        try:
            items.append(render_item(spec, row, f"{where}:{line}", line))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise KifabrikError(f"{source}: {len(problems)} bad item(s) in task {spec.name!r}:\n  "
                            + "\n  ".join(problems[:20]) + more, hint="fix the items; nothing was computed")
    return Task(spec, items, source, dataset_ids)


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for every non-empty line; errors name file:line."""
    from kifabrik.files import iter_jsonl

    try:
        return list(iter_jsonl(path))
    except FileNotFoundError:
        raise KifabrikError(f"{path}: no such items file", hint="`items:` is relative to the task file") from None
    except UnicodeDecodeError:
        raise KifabrikError(f"{path}: not UTF-8 text", hint="save the items file as UTF-8") from None


def render_item(spec: TaskSpec, row: dict[str, Any], where: str, line: int) -> Item:
    """Check one raw item against its task and render its prompt (raises ValueError with file:line)."""
    lang = row.get("lang") or spec.language
    item_id = str(row.get("id", line))
    if "messages" in row and isinstance(row["messages"], list):  # a chat row from a dataset
        msgs = [dict(m) for m in row["messages"]]
        if not msgs or msgs[-1].get("role") != "assistant" or len(msgs) < 2:
            raise ValueError(f"{where}: a chat row needs at least one user message and a final assistant answer")
        messages, reference = msgs[:-1], str(msgs[-1].get("content", ""))
        prompt = "\n\n".join(m["content"] for m in messages if m.get("role") == "user")
        return Item(item_id, lang, row, prompt, messages, references=[reference], where=where)
    try:
        prompt = _ENV.from_string(spec.prompt).render(**row)
    except jinja2.UndefinedError as exc:
        raise ValueError(f"{where}: the prompt template needs a field the item lacks ({exc.message})") from None
    messages = ([{"role": "system", "content": spec.system}] if spec.system else []) + [{"role": "user", "content": prompt}]
    if spec.type == "multiple_choice":
        choices = row.get(spec.choices_field)
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise ValueError(f"{where}: `{spec.choices_field}` must be a list of at least two non-empty strings")
        answer = row.get(spec.answer_field)
        if isinstance(answer, bool) or answer is None:
            raise ValueError(f"{where}: `{spec.answer_field}` is missing (a choice index or the choice text)")
        if isinstance(answer, int):
            if not 0 <= answer < len(choices):
                raise ValueError(f"{where}: answer index {answer} is out of range (the item has {len(choices)} choices)")
            gold = answer
        elif isinstance(answer, str) and answer in choices:
            gold = choices.index(answer)
        else:
            raise ValueError(f"{where}: answer {answer!r} is not among the choices {choices}")
        return Item(item_id, lang, row, prompt, messages, choices=list(choices), gold=gold, where=where)
    answer = row.get(spec.answer_field)
    refs = [answer] if isinstance(answer, str) else answer if isinstance(answer, list) else None
    if refs is None or not all(isinstance(r, str) for r in refs):
        if spec.type == "generation" and REFERENCE_METRICS & set(spec.metrics):
            raise ValueError(f"{where}: `{spec.answer_field}` must be a reference string or a list of strings")
        refs = []
    kind = str(row["kind"]) if row.get("kind") not in (None, "") else None
    answerable, checks = fact_fields(row, where) if "facts" in spec.metrics else (None, None)
    return Item(item_id, lang, row, prompt, messages, references=list(refs), where=where, kind=kind,
                answerable=answerable, checks=checks)


def fact_fields(row: dict[str, Any], where: str) -> tuple[bool, FactChecks | None]:
    """`answerable` and `checks` of a `facts` item (raises ValueError with file:line)."""
    answerable = row.get("answerable")
    if not isinstance(answerable, bool):
        raise ValueError(f"{where}: `answerable` must be true or false (the facts metric needs it)")
    raw = row.get("checks")
    if raw is None and not answerable:
        return False, None
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: `checks` must be a mapping with all, any and/or regex")
    if unknown := sorted(set(raw) - {"all", "any", "regex"}):
        raise ValueError(f"{where}: `checks` has unknown keys {unknown} (use all, any, regex)")
    lists = {}
    for key in ("all", "any"):
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f"{where}: `checks.{key}` must be a list of non-empty strings")
        lists[key] = tuple(value)
    pattern = raw.get("regex")
    if pattern is not None:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{where}: `checks.regex` must be a pattern string or null")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{where}: `checks.regex` {pattern!r} does not compile: {exc}") from None
    checks = FactChecks(lists["all"], lists["any"], pattern)
    if answerable and not (checks.all or checks.any or checks.regex):
        raise ValueError(f"{where}: an answerable item needs at least one check (all, any or regex)")
    return answerable, checks


def _dataset_rows(ws: Any, ref: DatasetItems, spec: TaskSpec) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    if ws is None:
        raise KifabrikError(f"task {spec.name!r} reads dataset {ref.dataset!r} but no workspace was given")
    record = ws.catalog.get_artifact(ref.dataset, "dataset")
    if record.meta.get("format") == "text" and spec.type == "multiple_choice":
        raise KifabrikError(f"dataset {record.ref} holds text rows; a multiple-choice task needs choices",
                            hint="use a JSONL items file, or a chat dataset with a generation/judge task")
    path = ws.path(record) / f"{ref.split}.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    if record.meta.get("format") == "text" or (rows and "text" in rows[0][1] and "messages" not in rows[0][1]):
        raise KifabrikError(f"dataset {record.ref} holds text rows without answers",
                            hint="generation/judge tasks need chat rows; text rows are used by the `da` suite")
    return rows, record.id
