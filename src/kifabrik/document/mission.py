"""The MISSION KI assessment: the catalogue's dimensions, criteria and indicators, filled with
the evidence an evaluation recorded, and the items that people still have to assess.

The catalogue is read from the user's file (VCIO.json of the quality standard); kifabrik ships
none of its text. The verdicts (levels, protection needs, statuses, "not assessable" and why)
are the ones the evaluation recorded; when it ran without the catalogue, the measured scores
are mapped onto levels with the thresholds it recorded, by the shared rules of
`kifabrik.mission_ki` (nothing is re-measured: counts and intervals come from the record).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kifabrik import mission_ki as mk
from kifabrik.document.facts import Fact, Source, not_recorded

LETTER = mk.LETTER
NO_CATALOGUE = ("no MISSION KI catalogue was given: pass --catalogue PATH/TO/VCIO.json (your copy of the quality "
                "standard) or set $KIFABRIK_MISSION_KI")


def catalogue_path(given: str | Path | None, evaluation: dict[str, Any] | None = None) -> Path | None:
    """`given`, else $KIFABRIK_MISSION_KI, else the catalogue the evaluation used (when it still exists)."""
    return mk.catalogue_path(given, recorded=((evaluation or {}).get("verdict") or {}).get("catalogue"))


def read_catalogue(path: Path) -> list[dict[str, Any]]:
    """Dimensions -> criteria -> indicators (ids, titles, weighting, type), in catalogue order."""
    return [{"id": dim, "title": body["title"],
             "criteria": [{k: c[k] for k in ("id", "title", "indicators")} for c in body["criteria"]]}
            for dim, body in mk.load_catalogue(path).items()]


def _with_text(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "text": mk.evidence_text(e)} for e in entries]


def measured_evidence(evaluation: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Indicator id -> evidence, from the metrics, counts, intervals and thresholds the evaluation recorded."""
    if not evaluation:
        return {}
    results = evaluation["results"]
    found = mk.evidence(mk.recorded_measurements(results), results.get("thresholds") or {})
    return {ind: _with_text(entries) for ind, entries in found.items()}


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
    counts = {"indicators": 0, "machine": 0, "people": 0, "open": 0, "not_assessable": 0}
    for dim in read_catalogue(path):
        dv = dims_v.get(dim["id"])
        crits = []
        for crit in dim["criteria"]:
            cv = crits_v.get(crit["id"])
            inds = []
            for ind in crit["indicators"]:
                counts["indicators"] += 1
                iv = inds_v.get(ind["id"])
                ev = _with_text((iv or {}).get("evidence") or []) or evidence.get(ind["id"], [])
                if iv:
                    level_n, origin, ind_status = iv.get("level"), iv.get("source"), iv.get("status")
                else:
                    level_n = mk.indicator_level(ev)[0] if ev else None
                    origin = "machine" if ev else "none"
                    ind_status = mk.NOT_ASSESSABLE if ev and level_n is None else ""
                where = f"results.json:verdict.{ind['id']}" if iv else f"results.json:metrics ({ind['id']})"
                if ind_status == mk.NOT_ASSESSABLE:
                    counts["not_assessable"] += 1
                    assert ev_src is not None
                    level = Fact(mk.NOT_ASSESSABLE, ev_src.at(where))
                elif level_n is None:
                    counts["open"] += 1
                    level = not_recorded("to be assessed by people (no automated test covers this indicator)")
                    open_items.append({"criterion": crit["id"], "indicator": ind["id"], "title": ind["title"],
                                       "type": ind["type"], "weighting": ind["weighting"]})
                else:
                    counts["machine" if origin == "machine" else "people"] += 1
                    assert ev_src is not None
                    level = Fact(LETTER[int(level_n)], ev_src.at(where))
                inds.append({**ind, "level": level, "origin": origin,
                             "evidence": [{**e, "source": ev_src} for e in ev]})
            if cv and ev_src:
                c_src = ev_src.at(f"results.json:verdict.{crit['id']}")
                need = (Fact(cv["need"], c_src) if cv.get("need") is not None
                        else not_recorded("no protection need was stated for this criterion"))
                if cv.get("level") is not None:
                    c_level = Fact(LETTER[cv["level"]], c_src)
                elif cv.get("status") == mk.NOT_ASSESSABLE:
                    c_level = Fact(mk.NOT_ASSESSABLE, c_src)
                else:
                    c_level = not_recorded("open: indicators still to be assessed by people")
                status = Fact(cv["status"] + (f" ({cv['note']})" if cv.get("note") else ""), c_src)
            else:
                need = c_level = status = not_recorded(no_verdict)
            crits.append({**crit, "need": need, "level": c_level, "status": status, "indicators": inds})
        d_status = (Fact(dv["status"], ev_src.at(f"results.json:verdict.{dim['id']}")) if dv and ev_src
                    else not_recorded(no_verdict))
        dims.append({"id": dim["id"], "title": dim["title"], "status": d_status, "criteria": crits})
    return {"catalogue": Fact(path.name, cat_src.at("file")), "dimensions": dims, "open": open_items,
            "evidence": evidence, "evaluation": evaluation, "counts": counts}
