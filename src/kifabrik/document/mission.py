"""The MISSION KI assessment: the catalogue's dimensions, criteria and indicators, filled with
the evidence an evaluation recorded, and the items that people still have to assess.

The catalogue is read from the user's file (VCIO.json of the quality standard); kifabrik ships
none of its text. The verdicts (levels, protection needs, statuses) are the ones the evaluation
recorded; this module applies no rules of its own beyond mapping a measured score onto a level
with the thresholds the evaluation recorded, when it ran without the catalogue.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from kifabrik.document.facts import Fact, Source, not_recorded
from kifabrik.errors import KifabrikError

CATALOGUE_ENV = "KIFABRIK_MISSION_KI"
LETTER = {3: "A", 2: "B", 1: "C", 0: "D"}
NO_CATALOGUE = ("no MISSION KI catalogue was given: pass --catalogue PATH/TO/VCIO.json (your copy of the quality "
                "standard) or set $KIFABRIK_MISSION_KI")


def catalogue_path(given: str | Path | None, evaluation: dict[str, Any] | None = None) -> Path | None:
    """`given`, else $KIFABRIK_MISSION_KI, else the catalogue the evaluation used (when it still exists)."""
    recorded = (evaluation or {}).get("verdict", {}).get("catalogue")
    for value, explicit in ((given, True), (os.environ.get(CATALOGUE_ENV), True), (recorded, False)):
        if not value:
            continue
        path = Path(value).expanduser()
        path = path / "VCIO.json" if path.is_dir() else path
        if path.exists():
            return path
        if explicit:
            raise KifabrikError(f"{path}: MISSION KI catalogue not found",
                                hint="give the VCIO.json of the MISSION KI quality standard (or its folder)")
    return None


def read_catalogue(path: Path) -> list[dict[str, Any]]:
    """Dimensions -> criteria -> indicators (ids, titles, weighting, type) from a VCIO.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [{"id": dim, "title": body.get("title", dim),
                 "criteria": [{"id": c["index"], "title": str(c.get("title", c["index"])).strip(),
                               "indicators": [{"id": i, "title": str(v.get("title", "")).strip(),
                                               "weighting": v.get("weighting"), "type": v.get("type")}
                                              for i, v in c["indicators"].items()]}
                              for c in body["criteria"]]}
                for dim, body in data.items()]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise KifabrikError(f"{path}: not a MISSION KI VCIO catalogue ({type(exc).__name__}: {exc})",
                            hint="give the VCIO.json file of the quality standard") from None


def level_of(score: float, threshold: dict[str, Any]) -> int:
    """The level a score reaches under a recorded threshold entry (need 3, 2, 1; else 0)."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return 0
    need = {int(k): float(v) for k, v in threshold["need"].items()}
    for n in (3, 2, 1):
        if (score >= need[n]) if threshold["better"] == "higher" else (score <= need[n]):
            return n
    return 0


def measured_evidence(evaluation: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Indicator id -> evidence, from the metrics and thresholds the evaluation recorded."""
    if not evaluation:
        return {}
    results = evaluation["results"]
    metrics = results.get("metrics") or {}
    out: dict[str, list[dict[str, Any]]] = {}
    for metric, th in (results.get("thresholds") or {}).items():
        if metric in metrics and not (isinstance(metrics[metric], float) and math.isnan(metrics[metric])):
            out.setdefault(th["indicator"], []).append(
                {"metric": metric, "score": metrics[metric], "level": level_of(metrics[metric], th),
                 "better": th["better"], "thresholds": th["need"]})
    return out


def assessment(path: Path | None, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The whole assessment: per dimension, criterion and indicator a level with its evidence, or open."""
    ev_src: Source | None = evaluation["source"] if evaluation else None
    no_eval = "no evaluation of this model is recorded: run `kifabrik eval MODEL --suite all`"
    evidence = measured_evidence(evaluation)
    if path is None:
        return {"catalogue": not_recorded(NO_CATALOGUE), "dimensions": [], "open": [], "evidence": evidence,
                "evaluation": evaluation, "counts": {}}
    cat_src = Source("catalogue", f"MISSION KI catalogue {path.name}", str(path))
    verdict = (evaluation or {}).get("verdict", {}) or {}
    dims_v = {d["id"]: d for d in verdict.get("dimensions") or []}
    crits_v = {c["id"]: c for d in dims_v.values() for c in d["criteria"]}
    inds_v = {i["id"]: i for c in crits_v.values() for i in c["indicators"]}
    no_verdict = ("the evaluation recorded no verdict (it ran without the catalogue or without protection needs)"
                  if evaluation else no_eval)
    dims, open_items = [], []
    counts = {"indicators": 0, "machine": 0, "people": 0, "open": 0}
    for dim in read_catalogue(path):
        dv = dims_v.get(dim["id"])
        crits = []
        for crit in dim["criteria"]:
            cv = crits_v.get(crit["id"])
            inds = []
            for ind in crit["indicators"]:
                counts["indicators"] += 1
                iv = inds_v.get(ind["id"])
                ev = (iv or {}).get("evidence") or evidence.get(ind["id"], [])
                level_n = iv.get("level") if iv else (min(e["level"] for e in ev) if ev else None)
                origin = iv.get("source") if iv else ("machine" if ev else "none")
                if level_n is None:
                    counts["open"] += 1
                    level = not_recorded("to be assessed by people (no automated test covers this indicator)")
                    open_items.append({"criterion": crit["id"], "indicator": ind["id"], "title": ind["title"],
                                       "type": ind["type"], "weighting": ind["weighting"]})
                else:
                    counts["machine" if origin == "machine" else "people"] += 1
                    assert ev_src is not None
                    where = f"results.json:verdict.{ind['id']}" if iv else f"results.json:metrics ({ind['id']})"
                    level = Fact(LETTER[int(level_n)], ev_src.at(where))
                inds.append({**ind, "level": level, "origin": origin,
                             "evidence": [{**e, "source": ev_src} for e in ev]})
            if cv and ev_src:
                c_src = ev_src.at(f"results.json:verdict.{crit['id']}")
                need = (Fact(cv["need"], c_src) if cv.get("need") is not None
                        else not_recorded("no protection need was stated for this criterion"))
                c_level = (Fact(LETTER[cv["level"]], c_src) if cv.get("level") is not None
                           else not_recorded("open: indicators still to be assessed by people"))
                status = Fact(cv["status"] + (f" ({cv['note']})" if cv.get("note") else ""), c_src)
            else:
                need = c_level = status = not_recorded(no_verdict)
            crits.append({**crit, "need": need, "level": c_level, "status": status, "indicators": inds})
        d_status = (Fact(dv["status"], ev_src.at(f"results.json:verdict.{dim['id']}")) if dv and ev_src
                    else not_recorded(no_verdict))
        dims.append({"id": dim["id"], "title": dim["title"], "status": d_status, "criteria": crits})
    return {"catalogue": Fact(path.name, cat_src.at("file")), "dimensions": dims, "open": open_items,
            "evidence": evidence, "evaluation": evaluation, "counts": counts}
