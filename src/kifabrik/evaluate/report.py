"""One self-contained HTML page per evaluation: radar chart, verdicts, a table per suite,
the worst failing samples, and the comparison with a baseline model. Every metric is shown
with its item count and 95 % interval; levels come from `kifabrik.mission_ki` (the
conservative end of the interval decides, a measurement that is not meaningful is "not
assessable").

No scripts, no external files: the chart is inline SVG and the styles are inline, so the
page can be mailed to an auditor or archived with the release.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import jinja2

import kifabrik
from kifabrik import mission_ki as mk

DIMENSIONS = ["VE", "ND", "CY", "DA", "TR", "MA"]
NAMES = {"VE": "Verlässlichkeit", "ND": "Nicht-Diskriminierung", "CY": "Cybersicherheit", "DA": "Datenschutz",
         "TR": "Transparenz", "MA": "Menschliche Aufsicht"}


def _evidence(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return mk.evidence(mk.recorded_measurements(results), results.get("thresholds") or {})


def dimension_levels(results: dict[str, Any]) -> dict[str, float | None]:
    """Per dimension the lowest level any measured metric reached (0-3); None where nothing was
    measured or every measurement is not assessable."""
    out: dict[str, float | None] = {d: None for d in DIMENSIONS}
    for indicator, entries in _evidence(results).items():
        level, _ = mk.indicator_level(entries)
        dim = indicator[:2]
        if level is not None:
            out[dim] = level if out.get(dim) is None else min(out[dim] or 0, level)
    return out


def not_assessable(results: dict[str, Any]) -> dict[str, list[str]]:
    """Per dimension the metrics whose measurement is not assessable, with the reason."""
    out: dict[str, list[str]] = {}
    for indicator, entries in _evidence(results).items():
        for e in entries:
            if e["status"] == mk.NOT_ASSESSABLE:
                out.setdefault(indicator[:2], []).append(f"{e['metric']}: {e['why']}")
    return out


def radar_svg(series: list[tuple[str, dict[str, float | None], str]], needs: dict[str, int] | None = None,
              size: int = 340) -> str:
    """An SVG radar chart over the six MISSION KI dimensions, levels 0-3; each series (label, levels, colour)."""
    c = size / 2
    r = size / 2 - 60
    n = len(DIMENSIONS)

    def point(i: int, value: float) -> tuple[float, float]:
        angle = -math.pi / 2 + 2 * math.pi * i / n
        return c + r * value / 3 * math.cos(angle), c + r * value / 3 * math.sin(angle)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
             'role="img" aria-label="MISSION KI dimensions radar chart">']
    for ring in (1, 2, 3):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, ring) for i in range(n)))
        parts.append(f'<polygon points="{pts}" fill="none" stroke="#ccc" stroke-width="1"/>')
    for i, dim in enumerate(DIMENSIONS):
        x, y = point(i, 3)
        lx, ly = point(i, 3.55)
        parts.append(f'<line x1="{c}" y1="{c}" x2="{x:.1f}" y2="{y:.1f}" stroke="#ccc"/>')
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="12" text-anchor="middle" '
                     f'dominant-baseline="middle">{dim}</text>')
    if needs:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, needs.get(d, 0)) for i, d in enumerate(DIMENSIONS)))
        parts.append(f'<polygon points="{pts}" fill="none" stroke="#b00" stroke-dasharray="4 3" stroke-width="1.5"/>')
    for _, levels, colour in series:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in
                       (point(i, levels.get(d) or 0) for i, d in enumerate(DIMENSIONS)))
        parts.append(f'<polygon points="{pts}" fill="{colour}" fill-opacity="0.18" stroke="{colour}" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def worst_samples(task_results: list[tuple[str, Any]], per_task: int = 3) -> list[dict[str, Any]]:
    """The lowest-scoring failed samples of every task (score below 1), worst first."""
    out = []
    for group, res in task_results:
        failed = sorted((s for s in res.samples if float(s.get("score", 1)) < 1), key=lambda s: float(s["score"]))
        for s in failed[:per_task]:
            expected = (s["choices"][s["gold"]] if "choices" in s and s.get("gold") is not None
                        else "; ".join(s.get("references") or []) or "-")
            out.append({"group": group, "task": res.name, "id": s.get("id"), "lang": s.get("lang"),
                        "prompt": str(s.get("prompt", ""))[-400:], "output": str(s.get("output", ""))[:400],
                        "expected": str(expected)[:200], "score": float(s["score"])})
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return "n/a" if value is None else str(value)


def _row(key: str, value: Any, m: mk.Measurement | None, base: Any) -> dict[str, Any]:
    """A table row: value, n, interval, baseline and difference."""
    return {"metric": key, "value": value, "baseline": base, "n": m.n if m else None,
            "ci": mk.interval_text(m.ci_low, m.ci_high) if m else "n/a",
            "delta": (value - base) if isinstance(base, float) and isinstance(value, float) else None}


def render_report(results: dict[str, Any], task_results: list[tuple[str, Any]],
                  baseline: dict[str, Any] | None = None) -> str:
    env = jinja2.Environment(autoescape=True)  # missing details render as empty
    env.filters["fmt"] = _fmt
    env.filters["letter"] = lambda v: mk.LETTER.get(v, "–")
    env.filters["ci"] = lambda st: mk.interval_text((st or {}).get("ci_low"), (st or {}).get("ci_high"))
    template = env.from_string((resources.files("kifabrik.evaluate") / "data" / "report.html.j2").read_text("utf-8"))
    levels = dimension_levels(results)
    series = [(results["model"]["ref"], levels, "#1565c0")]
    base_levels = None
    if baseline is not None:
        base_levels = dimension_levels(baseline)
        series.insert(0, (baseline["model"]["ref"], base_levels, "#9e9e9e"))
    needs = None
    dims = results["verdict"].get("dimensions") or []
    if dims:
        needs = {d["id"]: d["highest_need"] or 0 for d in dims}
    measures = mk.recorded_measurements(results)
    metric_rows = []
    for suite in results["suites"]:
        rows = []
        for key, value in suite["metrics"].items():
            th = results["thresholds"].get(key)
            m = measures.get(key)
            row = _row(key, value, m, baseline["metrics"].get(key) if baseline else None)
            graded = mk.grade(m, th["better"], th["need"]) if th and m else None
            row.update(indicator=th["indicator"] if th else "", better=th["better"] if th else "",
                       need={int(k): v for k, v in th["need"].items()} if th else None,
                       level=graded.level if graded else None,
                       status=graded.status if graded else "", why=(graded.why if graded else "") or (m.why if m else ""))
            rows.append(row)
        metric_rows.append({"suite": suite, "rows": rows})
    task_rows = []
    for task in results["tasks"]:
        for key, value in task["metrics"].items():
            full = f"task.{task['name']}.{key}"
            row = _row(key, value, measures.get(full), baseline["metrics"].get(full) if baseline else None)
            task_rows.append({"task": task["name"], **row, "n": row["n"] if row["n"] is not None else task.get("n")})
    return template.render(
        r=results, baseline=baseline, version=kifabrik.__version__, radar=radar_svg(series, needs),
        levels=levels, base_levels=base_levels, names=NAMES, dimensions=DIMENSIONS, metric_rows=metric_rows,
        task_rows=task_rows, worst=worst_samples(task_results), dims=dims, blocked=not_assessable(results),
        tasks_by_kind=[t for t in results["tasks"] if t.get("by_kind")],
    )
