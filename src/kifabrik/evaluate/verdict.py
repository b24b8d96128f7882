"""MISSION KI verdicts from measured scores, protection needs and (optional) people's assessments.

The rules themselves (threshold -> level on the conservative end of the 95 % interval, "not
assessable" for measurements that are not meaningful, criterion level, dimension pass, the
catalogue's location and reader) live in `kifabrik.mission_ki`, shared with the documents.
This module applies them to one evaluation:

- a measured metric gives its indicator a level through `data/thresholds.yaml`; indicators no
  metric covers are "to be assessed by people" unless an assessment file gives their level;
- an indicator whose only machine evidence is not assessable is "not assessable" (neither A nor
  D), with the reason; a people's level for it is used instead when one is given;
- a criterion with any indicator still to be assessed by people is "open", with any indicator
  not assessable it is "not assessable": machine evidence alone never shows it as fulfilled
  (under the max rule one high measured indicator would otherwise "fulfil" a criterion whose
  organisational indicators nobody looked at).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kifabrik import mission_ki as mk
from kifabrik.config import load_yaml
from kifabrik.errors import KifabrikError
from kifabrik.files import load_json_text, read_input
from kifabrik.mission_ki import (
    CATALOGUE_ENV,
    LETTER,
    LEVEL,
    catalogue_path,
    criterion_level,
    load_catalogue,
)

__all__ = ["CATALOGUE_ENV", "LETTER", "LEVEL", "Threshold", "as_dict", "catalogue_path", "criterion_level",
           "load_catalogue", "load_thresholds", "needs_from_questionnaire", "parse_needs", "verdicts"]


# ------------------------------------------------------------------ thresholds
@dataclass(frozen=True)
class Threshold:
    metric: str
    indicator: str
    better: Literal["higher", "lower"]
    need: dict[int, float]

    def level(self, score: float | None) -> int | None:
        """Highest need (3, 2, 1) whose threshold the score meets; 0 (D) when it meets none; None for NaN."""
        return mk.threshold_level(score, self.better, self.need)

    def as_dict(self) -> dict[str, Any]:
        return {"indicator": self.indicator, "better": self.better, "need": self.need}


def load_thresholds(override: Path | None = None) -> dict[str, Threshold]:
    """The packaged thresholds, with entries of `override` (same format) replacing whole entries."""
    from kifabrik.evaluate.suites import data_file

    raw = yaml.safe_load(data_file("thresholds.yaml").read_text(encoding="utf-8"))
    if override is not None:
        try:
            extra = load_yaml(Path(override)) or {}  # under the input limits, errors name file:line
        except (OSError, yaml.YAMLError) as exc:
            raise KifabrikError(f"{override}: cannot read the thresholds file ({exc})") from None
        if not isinstance(extra, dict):
            raise KifabrikError(f"{override}: expected a mapping of metric -> {{indicator, better, need}}")
        raw.update(extra)
    out = {}
    for metric, entry in raw.items():
        try:
            need = {int(k): float(v) for k, v in entry["need"].items()}
            if set(need) != {1, 2, 3} or entry["better"] not in ("higher", "lower"):
                raise ValueError("need must give 1, 2 and 3; better must be higher or lower")
            out[metric] = Threshold(metric, str(entry["indicator"]), entry["better"], need)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KifabrikError(f"thresholds entry {metric!r} is invalid ({exc})",
                                hint="each entry needs indicator, better (higher|lower) and need: {1: x, 2: y, 3: z}") from None
    return out


# ------------------------------------------------------------------ protection needs
def parse_needs(values: dict[str, Any] | list[str] | None) -> dict[str, int]:
    """`{"VE1": 3}` or `["VE1=3"]` -> `{"VE1": 3}`; needs must be 1, 2 or 3."""
    pairs = (v.split("=", 1) for v in values) if isinstance(values, list) else (values or {}).items()
    out = {}
    for key, value in pairs:
        try:
            need = int(value)
        except (TypeError, ValueError):
            need = 0
        if need not in (1, 2, 3):
            raise KifabrikError(f"protection need {key}={value!r}: must be 1 (low), 2 (moderate) or 3 (high)")
        out[str(key).strip().upper()] = need
    return out


def needs_from_questionnaire(catalogue: Path, answers: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """Protection need per criterion from answers to ProtectionNeedsAnalysis.json (beside VCIO.json).

    kifabrik's reading of the questionnaire: each answer's key is a need (1-3); a criterion's
    need is the highest need among its answered questions; an applicability question (type AF)
    answered with the lowest key makes its criterion not applicable; a question that
    `receivesValueFromCriterion` and is left unanswered takes that criterion's need.
    Returns (needs, notes per criterion).
    """
    path = catalogue.parent / "ProtectionNeedsAnalysis.json"
    try:
        pna = load_json_text(read_input(path), str(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise KifabrikError(f"{path}: cannot read the protection-needs questionnaire ({exc})",
                            hint="keep ProtectionNeedsAnalysis.json beside VCIO.json") from None
    ids = {c["type_id"]: c["id"] for d in load_catalogue(catalogue).values() for c in d["criteria"]}
    answers = answers.get("answers", answers) if isinstance(answers, dict) else {}
    questions = [q for d in pna.values() for group in d.get("questions", []) for q in group]
    known = {q["id"] for q in questions}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise KifabrikError(f"questionnaire answers name unknown questions: {', '.join(unknown[:10])}",
                            hint=f"question ids are like {next(iter(sorted(known)))}; see {path}")
    needs: dict[str, int] = {}
    notes: dict[str, str] = {}
    deferred = []
    for q in questions:
        crit = ids.get(q["criteria"])
        if crit is None:
            continue
        if q["id"] not in answers:
            if q.get("receivesValueFromCriterion") in ids:
                deferred.append((crit, ids[q["receivesValueFromCriterion"]]))
            continue
        value = _answer_value(q, answers[q["id"]])
        if q["type"] == "AF" and value == min(int(k) for k in q["answers"]):
            notes[crit] = f"not applicable (question {q['id']} answered {q['answers'][str(value)]!r})"
        needs[crit] = max(needs.get(crit, 0), value)
    for crit, source in deferred:
        if source in needs:
            needs[crit] = max(needs.get(crit, 0), needs[source])
    return needs, notes


def _answer_value(question: dict[str, Any], answer: Any) -> int:
    options = question["answers"]
    if str(answer) in options:
        return int(answer)
    for key, text in options.items():
        if str(answer).strip().lower() == str(text).strip().lower():
            return int(key)
    raise KifabrikError(f"question {question['id']}: answer {answer!r} is not one of {options}")


# ------------------------------------------------------------------ verdicts
IndicatorStatus = Literal["assessed", "to be assessed by people", "not assessable"]


@dataclass
class IndicatorVerdict:
    id: str
    title: str
    weighting: str
    level: int | None
    source: Literal["machine", "people", "none"]
    evidence: list[dict[str, Any]] = field(default_factory=list)
    status: IndicatorStatus = "assessed"
    note: str = ""


@dataclass
class CriterionVerdict:
    id: str
    title: str
    need: int | None
    level: int | None
    status: Literal["fulfilled", "not fulfilled", "open", "not assessable", "not applicable"]
    indicators: list[IndicatorVerdict]
    note: str = ""

    @property
    def to_people(self) -> list[str]:
        return [i.id for i in self.indicators if i.status == "to be assessed by people"]


@dataclass
class DimensionVerdict:
    id: str
    title: str
    status: Literal["passed", "not passed", "not assessable", "open", "no need stated"]
    highest_need: int | None
    machine_level: int | None  # lowest measured indicator level in the dimension (for the radar chart)
    criteria: list[CriterionVerdict]


def verdicts(catalogue: dict[str, Any], metrics: Mapping[str, float], needs: dict[str, int],
             thresholds: dict[str, Threshold], assessments: dict[str, str] | None = None,
             not_applicable: dict[str, str] | None = None,
             stats: Mapping[str, Mapping[str, Any]] | None = None) -> list[DimensionVerdict]:
    """Apply the rules to every dimension of the catalogue.

    `metrics` values may be `stats.Measured` (they carry their interval); `stats` (metric ->
    recorded stats entry) gives the interval of plain values. A value with neither is taken at
    face value.
    """
    measured = {k: mk.Measurement.of(v, (stats or {}).get(k)) for k, v in metrics.items() if not mk.is_missing(v)}
    evidence = mk.evidence(measured, {k: t.as_dict() for k, t in thresholds.items()})
    people = {k: LEVEL[v.upper()] for k, v in (assessments or {}).items()}
    out = []
    for dim, body in catalogue.items():
        crits = [_criterion(crit, evidence, people, needs.get(crit["id"]), (not_applicable or {}).get(crit["id"], ""))
                 for crit in body["criteria"]]
        out.append(_dimension(dim, body["title"], crits))
    return out


def _indicator(ind: dict[str, Any], ev: list[dict[str, Any]], people: dict[str, int]) -> IndicatorVerdict:
    own = people.get(ind["id"])
    if ev:
        level, why = mk.indicator_level(ev)
        if level is not None:  # a people's level for the same indicator can only lower it
            return IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], level if own is None else min(level, own),
                                    "machine", ev)
        if own is not None:
            return IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], own, "people", ev,
                                    note=f"machine evidence not assessable ({why}); level assessed by people")
        return IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], None, "machine", ev, mk.NOT_ASSESSABLE, why)
    if own is not None:
        return IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], own, "people")
    return IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], None, "none", status="to be assessed by people")


def _criterion(crit: dict[str, Any], evidence: dict[str, list[dict[str, Any]]], people: dict[str, int],
               need: int | None, not_applicable: str) -> CriterionVerdict:
    inds = [_indicator(ind, evidence.get(ind["id"], []), people) for ind in crit["indicators"]]
    known = [i.level for i in inds if i.level is not None]
    level = criterion_level(known, [i.weighting for i in inds]) if len(known) == len(inds) else None
    blocked = [i for i in inds if i.status == mk.NOT_ASSESSABLE]
    missing = sum(i.status == "to be assessed by people" for i in inds)
    status: Any
    if not_applicable:
        status, note = "not applicable", not_applicable
    elif blocked:
        status = mk.NOT_ASSESSABLE
        note = "; ".join(f"{i.id} not assessable: {i.note}" for i in blocked)
        note += f"; {missing} indicator(s) to be assessed by people" if missing else ""
    elif level is None:
        status, note = "open", f"{missing} indicator(s) to be assessed by people"
    elif need is None:
        status, note = "open", "no protection need stated"
    else:
        status, note = ("fulfilled" if level >= need else "not fulfilled"), ""
    return CriterionVerdict(crit["id"], crit["title"], need, level, status, inds, note)


def _dimension(dim: str, title: str, crits: list[CriterionVerdict]) -> DimensionVerdict:
    active = [c for c in crits if c.status != "not applicable"]
    measured = [i.level for c in active for i in c.indicators if i.source == "machine" and i.level is not None]
    status: Any = mk.dimension_status([c.level for c in active], [c.need for c in active],
                                      any(c.status == mk.NOT_ASSESSABLE for c in active))
    stated = [c.need for c in active if c.need is not None]
    return DimensionVerdict(dim, title, status, max(stated) if stated else None, min(measured) if measured else None,
                            crits)


def as_dict(dims: list[DimensionVerdict]) -> list[dict[str, Any]]:
    return [asdict(d) for d in dims]
