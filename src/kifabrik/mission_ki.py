"""The MISSION KI rules, in one place: evaluate and document both call this module.

The quality standard (DESIGN.md) and kifabrik's reading of it:

- indicator level: A=3, B=2, C=1, D=0. A measured metric gives its indicator a level through a
  threshold entry (`better: higher|lower`, `need: {1: x, 2: y, 3: z}`): the highest need whose
  threshold it meets, else D. kifabrik compares the *conservative end of the 95 % interval*
  (the lower bound where higher is better, the upper bound where lower is better), so a level
  is only given where the measurement shows it beyond sampling noise. A value recorded without
  an interval is taken at face value;
- a level above D needs a meaningful measurement: a measurement that records
  `meaningful: false` (for instance a robustness drop of a model whose clean accuracy is not
  significantly above chance) is "not assessable" instead of earning a level. A D stays a D:
  a bad result needs no proof of meaning;
- criterion level = max of its indicator levels if any indicator is weighted "Maximalwert",
  else the rounded mean (half up); a criterion is fulfilled when level >= its protection need;
- a dimension passes when its lowest criterion level >= its highest protection need.

The catalogue (VCIO.json) is the user's copy of the official one; kifabrik ships none of its
text. No torch, no stage imports: this is the core layer.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from kifabrik.errors import KifabrikError
from kifabrik.files import load_json_text, read_input

LETTER = {3: "A", 2: "B", 1: "C", 0: "D"}
LEVEL = {v: k for k, v in LETTER.items()}
CATALOGUE_ENV = "KIFABRIK_MISSION_KI"
NOT_ASSESSABLE: Literal["not assessable"] = "not assessable"
Better = Literal["higher", "lower"]
GradeStatus = Literal["measured", "not assessable"]


def is_missing(value: Any) -> bool:
    """True for None, NaN and anything that is not a number (booleans are not scores)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    return math.isnan(value)


# ------------------------------------------------------------------ measurements
@dataclass(frozen=True)
class Measurement:
    """A recorded metric value with its item count and 95 % interval (as evaluations store them)."""

    value: float
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    method: str | None = None
    chance: float | None = None
    meaningful: bool = True
    why: str = ""

    @classmethod
    def of(cls, value: Any, stats: Mapping[str, Any] | None = None) -> Measurement:
        """From a metric value and the `stats` entry recorded beside it; with `stats` None, from the
        attributes the value itself carries (an evaluation's in-memory `Measured` values)."""

        def get(key: str) -> Any:
            return stats.get(key) if stats is not None else getattr(value, key, None)

        n = get("n")
        return cls(float(value), None if is_missing(n) else int(n), _num(get("ci_low")), _num(get("ci_high")),
                   get("method"), _num(get("chance")), get("meaningful") is not False, str(get("why") or ""))

    @property
    def has_interval(self) -> bool:
        return self.ci_low is not None and self.ci_high is not None and not (
            math.isnan(self.ci_low) or math.isnan(self.ci_high))

    def bound(self, better: Better) -> float:
        """The end of the interval a threshold must clear: the lower one where higher is better."""
        if not self.has_interval:
            return self.value
        return float(self.ci_low if better == "higher" else self.ci_high)  # type: ignore[arg-type]

    def above_chance(self) -> bool:
        """The lower end of the interval lies above the chance rate (0 when none is recorded)."""
        return self.has_interval and float(self.ci_low) > (self.chance or 0.0)  # type: ignore[arg-type]

    def text(self) -> str:
        """`0.625 (95 % CI 0.503–0.733, n = 64)`, for messages and documents."""
        value = "n/a" if math.isnan(self.value) else f"{self.value:.3g}"
        if not self.has_interval:
            return f"{value} (no interval recorded" + (f", n = {self.n})" if self.n is not None else ")")
        return f"{value} (95 % CI {interval_text(self.ci_low, self.ci_high)}, n = {self.n})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: Any) -> float | None:
    return None if is_missing(value) else float(value)


def interval_text(low: float | None, high: float | None) -> str:
    """`0.503–0.733`; `n/a` when there is no interval."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"{low:.3g}–{high:.3g}"


def chance_caveat(reference: str, m: Measurement) -> str:
    """Why a measurement that rests on `reference` is not meaningful; "" when it is."""
    if m.above_chance():
        return ""
    return (f"{reference} = {m.text()} is not significantly above the chance rate {m.chance or 0.0:.3g}, "
            "so this measurement cannot show a good level")


def recorded_measurements(results: Mapping[str, Any]) -> dict[str, Measurement]:
    """Metric key -> `Measurement` from an evaluation's results.json (task and suite `stats`)."""
    stats: dict[str, Mapping[str, Any]] = {}
    for task in results.get("tasks") or []:
        for key, entry in (task.get("stats") or {}).items():
            stats[f"task.{task.get('name')}.{key}"] = entry
    for suite in results.get("suites") or []:
        stats.update(suite.get("stats") or {})
    return {key: Measurement.of(value, stats.get(key, {}))
            for key, value in (results.get("metrics") or {}).items() if not is_missing(value)}


# ------------------------------------------------------------------ levels
def threshold_level(score: float | None, better: Better | str, need: Mapping[Any, Any]) -> int | None:
    """Highest need (3, 2, 1) whose threshold `score` meets; 0 (D) when it meets none; None for NaN/None.

    `need` may have int or str keys (thresholds read back from JSON have str keys).
    """
    if is_missing(score):
        return None
    limits = {int(k): float(v) for k, v in need.items()}
    for level in (3, 2, 1):
        if (score >= limits[level]) if better == "higher" else (score <= limits[level]):  # type: ignore[operator]
            return level
    return 0


class Grade(NamedTuple):
    """What one measurement gives its indicator: a level, or not assessable (level None) and why."""

    level: int | None
    status: GradeStatus
    bound: float
    why: str


def grade(m: Measurement, better: Better | str, need: Mapping[Any, Any]) -> Grade:
    """The level of one measurement under one threshold entry (the conservative interval end decides)."""
    bound = m.bound(better)  # type: ignore[arg-type]
    level = threshold_level(bound, better, need)
    if level is None:
        return Grade(None, NOT_ASSESSABLE, bound, "no value was measured")
    if level > 0 and not m.meaningful:
        return Grade(None, NOT_ASSESSABLE, bound, m.why or "the measurement is not meaningful")
    return Grade(level, "measured", bound, "")


def evidence(measurements: Mapping[str, Measurement],
             thresholds: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Indicator id -> one evidence entry per measured metric that a threshold maps onto it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for metric, th in thresholds.items():
        m = measurements.get(metric)
        if m is None or math.isnan(m.value):
            continue
        g = grade(m, th["better"], th["need"])
        out.setdefault(str(th["indicator"]), []).append({
            "metric": metric, "score": m.value, "n": m.n, "ci_low": m.ci_low, "ci_high": m.ci_high,
            "bound": g.bound, "level": g.level, "status": g.status, "why": g.why, "better": th["better"],
            "thresholds": dict(th["need"])})
    return out


def indicator_level(entries: Sequence[Mapping[str, Any]]) -> tuple[int | None, str]:
    """(level, why) of an indicator from its evidence: the lowest level of the measured entries;
    (None, reasons) when every entry is not assessable."""
    levels = [e["level"] for e in entries if e.get("status", "measured") == "measured" and e["level"] is not None]
    if levels:
        return min(levels), ""
    return None, "; ".join(f"{e['metric']}: {e.get('why') or 'not assessable'}" for e in entries)


def evidence_text(e: Mapping[str, Any]) -> str:
    """`ve.accuracy = 0.625 (95 % CI 0.503–0.733, n = 64; higher is better) → level C`."""
    m = Measurement.of(e["score"], e)
    head = f"{e['metric']} = {m.text()[:-1]}; {e['better']} is better)"
    if e.get("status") == NOT_ASSESSABLE or e.get("level") is None:
        return f"{head} → {NOT_ASSESSABLE}: {e.get('why') or 'no meaningful measurement'}"
    return f"{head} → level {LETTER[int(e['level'])]}"


def criterion_level(levels: Sequence[int], weightings: Sequence[str]) -> int:
    """MISSION KI: max if any indicator is weighted Maximalwert, else the rounded mean (half up)."""
    if any(w == "Maximalwert" for w in weightings):
        return max(levels)
    return math.floor(sum(levels) / len(levels) + 0.5)


def dimension_passes(levels: Sequence[int], highest_need: int) -> bool:
    """MISSION KI: a dimension passes when its lowest criterion level >= its highest protection need."""
    return bool(levels) and min(levels) >= highest_need


def dimension_status(levels: Sequence[int | None], needs: Sequence[int | None],
                     not_assessable: bool = False) -> str:
    """passed | not passed | not assessable | open | no need stated, over a dimension's active criteria.

    A criterion level already below the highest need decides "not passed" even while others are open.
    """
    stated = [n for n in needs if n is not None]
    if not stated:
        return "no need stated"
    highest = max(stated)
    known = [lv for lv in levels if lv is not None]
    if any(lv < highest for lv in known):
        return "not passed"
    if len(known) == len(levels):
        return "passed" if dimension_passes(known, highest) else "not passed"
    return NOT_ASSESSABLE if not_assessable else "open"


# ------------------------------------------------------------------ catalogue
def catalogue_path(given: str | Path | None = None, *, recorded: str | Path | None = None) -> Path | None:
    """The VCIO.json to use: `given`, else $KIFABRIK_MISSION_KI, else `recorded` (the catalogue an
    evaluation used, only while it still exists). A folder means its VCIO.json.

    Raises:
        KifabrikError: `given` or the environment variable names a catalogue that does not exist.
    """
    for value, explicit in ((given, True), (os.environ.get(CATALOGUE_ENV), True), (recorded, False)):
        if not value:
            continue
        path = Path(value).expanduser()
        path = path / "VCIO.json" if path.is_dir() else path
        if path.exists():
            return path
        if explicit:
            raise KifabrikError(f"{path}: MISSION KI catalogue not found",
                                hint="give the VCIO.json of the MISSION KI quality standard (or its folder) with "
                                     f"--catalogue, or set ${CATALOGUE_ENV}")
    return None


@cache
def load_catalogue(path: Path) -> dict[str, Any]:
    """Dimension id -> {title, criteria: [{id, type_id, title, indicators: [{id, title, weighting, type}]}]}."""
    try:
        data = load_json_text(read_input(Path(path)), str(path))
        out = {}
        for dim, body in data.items():
            criteria = []
            for crit in body["criteria"]:
                inds = [{"id": i, "title": str(v.get("title", "")).strip(), "weighting": v["weighting"],
                         "type": v.get("type")} for i, v in crit["indicators"].items()]
                criteria.append({"id": crit["index"], "type_id": crit.get("criterion_type_id"),
                                 "title": str(crit.get("title", crit["index"])).strip(), "indicators": inds})
            out[dim] = {"title": body.get("title", dim), "criteria": criteria}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise KifabrikError(f"{path}: not a MISSION KI VCIO catalogue ({type(exc).__name__}: {exc})",
                            hint="give the VCIO.json file of the quality standard") from None
    return out
