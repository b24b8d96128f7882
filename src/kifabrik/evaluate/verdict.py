"""MISSION KI verdicts from measured scores, protection needs and (optional) people's assessments.

The catalogue (VCIO.json, and ProtectionNeedsAnalysis.json beside it) is the user's copy of
the official one; kifabrik ships none of its text. The rules (DESIGN.md):

- indicator level: A=3, B=2, C=1, D=0. A measured metric gives its indicator a level through
  `data/thresholds.yaml`; indicators no metric covers are "to be assessed by people" unless
  an assessment file gives their level;
- criterion level = max of its indicator levels if any indicator is weighted "Maximalwert",
  else the rounded mean; the criterion is fulfilled when level >= its protection need;
- a dimension passes when its lowest criterion level >= its highest protection need.

A criterion with any indicator still to be assessed by people is "open": machine evidence
alone never shows it as fulfilled (under the max rule one high measured indicator would
otherwise "fulfil" a criterion whose organisational indicators nobody looked at).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from kifabrik.errors import KifabrikError

LETTER = {3: "A", 2: "B", 1: "C", 0: "D"}
LEVEL = {v: k for k, v in LETTER.items()}
CATALOGUE_ENV = "KIFABRIK_MISSION_KI"


# ------------------------------------------------------------------ thresholds
@dataclass(frozen=True)
class Threshold:
    metric: str
    indicator: str
    better: Literal["higher", "lower"]
    need: dict[int, float]

    def level(self, score: float) -> int:
        """Highest need (3, 2, 1) whose threshold the score meets; 0 (D) when it meets none."""
        if score is None or math.isnan(score):
            return 0
        for n in (3, 2, 1):
            t = self.need[n]
            if (score >= t) if self.better == "higher" else (score <= t):
                return n
        return 0


def load_thresholds(override: Path | None = None) -> dict[str, Threshold]:
    """The packaged thresholds, with entries of `override` (same format) replacing whole entries."""
    from kifabrik.evaluate.suites import data_file

    raw = yaml.safe_load(data_file("thresholds.yaml").read_text(encoding="utf-8"))
    if override is not None:
        try:
            extra = yaml.safe_load(Path(override).read_text(encoding="utf-8")) or {}
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


# ------------------------------------------------------------------ catalogue
def catalogue_path(given: str | Path | None = None) -> Path | None:
    """The VCIO.json to use: `given`, else $KIFABRIK_MISSION_KI (a file or folder); None when there is none."""
    value = given or os.environ.get(CATALOGUE_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    path = path / "VCIO.json" if path.is_dir() else path
    if not path.exists():
        raise KifabrikError(f"{path}: MISSION KI catalogue not found",
                            hint="give the VCIO.json of the MISSION KI quality standard (or its folder) with --catalogue")
    return path


@cache
def load_catalogue(path: Path) -> dict[str, Any]:
    """Dimensions -> criteria -> indicators from a VCIO.json, checked for the fields the rules need."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        out = {}
        for dim, body in data.items():
            criteria = []
            for crit in body["criteria"]:
                inds = [{"id": i, "title": v.get("title", ""), "weighting": v["weighting"], "type": v.get("type")}
                        for i, v in crit["indicators"].items()]
                criteria.append({"id": crit["index"], "type_id": crit.get("criterion_type_id"),
                                 "title": crit.get("title", crit["index"]), "indicators": inds})
            out[dim] = {"title": body.get("title", dim), "criteria": criteria}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise KifabrikError(f"{path}: not a MISSION KI VCIO catalogue ({type(exc).__name__}: {exc})",
                            hint="give the VCIO.json file of the quality standard") from None
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
        pna = json.loads(path.read_text(encoding="utf-8"))
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
@dataclass
class IndicatorVerdict:
    id: str
    title: str
    weighting: str
    level: int | None
    source: Literal["machine", "people", "none"]
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CriterionVerdict:
    id: str
    title: str
    need: int | None
    level: int | None
    status: Literal["fulfilled", "not fulfilled", "open", "not applicable"]
    indicators: list[IndicatorVerdict]
    note: str = ""

    @property
    def to_people(self) -> list[str]:
        return [i.id for i in self.indicators if i.level is None]


@dataclass
class DimensionVerdict:
    id: str
    title: str
    status: Literal["passed", "not passed", "open", "no need stated"]
    highest_need: int | None
    machine_level: int | None  # lowest measured indicator level in the dimension (for the radar chart)
    criteria: list[CriterionVerdict]


def criterion_level(levels: list[int], weightings: list[str]) -> int:
    """MISSION KI: max if any indicator is weighted Maximalwert, else the rounded mean (half up)."""
    if any(w == "Maximalwert" for w in weightings):
        return max(levels)
    return int(math.floor(sum(levels) / len(levels) + 0.5))


def verdicts(catalogue: dict[str, Any], metrics: dict[str, float], needs: dict[str, int],
             thresholds: dict[str, Threshold], assessments: dict[str, str] | None = None,
             not_applicable: dict[str, str] | None = None) -> list[DimensionVerdict]:
    """Apply the rules to every dimension of the catalogue."""
    evidence: dict[str, list[dict[str, Any]]] = {}
    for metric, th in thresholds.items():
        if metric in metrics and not math.isnan(metrics[metric]):
            evidence.setdefault(th.indicator, []).append(
                {"metric": metric, "score": metrics[metric], "level": th.level(metrics[metric]), "better": th.better,
                 "thresholds": th.need})
    people = {k: LEVEL[v.upper()] for k, v in (assessments or {}).items()}
    out = []
    for dim, body in catalogue.items():
        crits = []
        for crit in body["criteria"]:
            inds = []
            for ind in crit["indicators"]:
                ev = evidence.get(ind["id"], [])
                if ev:  # the lowest measured level; a people's level for the same indicator can only lower it
                    level = min(e["level"] for e in ev)
                    level = min(level, people[ind["id"]]) if ind["id"] in people else level
                    inds.append(IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], level, "machine", ev))
                elif ind["id"] in people:
                    inds.append(IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], people[ind["id"]], "people"))
                else:
                    inds.append(IndicatorVerdict(ind["id"], ind["title"], ind["weighting"], None, "none"))
            need = needs.get(crit["id"])
            note = (not_applicable or {}).get(crit["id"], "")
            known = [i.level for i in inds if i.level is not None]
            level = criterion_level(known, [i.weighting for i in inds]) if len(known) == len(inds) else None
            if note:
                status = "not applicable"
            elif level is None:
                status = "open"
                missing = len(inds) - len(known)
                note = f"{missing} indicator(s) to be assessed by people"
            elif need is None:
                status, note = "open", "no protection need stated"
            else:
                status = "fulfilled" if level >= need else "not fulfilled"
            crits.append(CriterionVerdict(crit["id"], crit["title"], need, level, status, inds, note))
        out.append(_dimension(dim, body["title"], crits))
    return out


def _dimension(dim: str, title: str, crits: list[CriterionVerdict]) -> DimensionVerdict:
    active = [c for c in crits if c.status != "not applicable"]
    stated = [c.need for c in active if c.need is not None]
    highest = max(stated) if stated else None
    measured = [i.level for c in active for i in c.indicators if i.source == "machine" and i.level is not None]
    machine = min(measured) if measured else None
    if highest is None:
        status: Any = "no need stated"
    elif any(c.level is not None and c.level < highest for c in active):
        status = "not passed"  # its lowest criterion level is already below the highest need
    elif all(c.level is not None for c in active):
        status = "passed"
    else:
        status = "open"
    return DimensionVerdict(dim, title, status, highest, machine, crits)


def as_dict(dims: list[DimensionVerdict]) -> list[dict[str, Any]]:
    return [asdict(d) for d in dims]
