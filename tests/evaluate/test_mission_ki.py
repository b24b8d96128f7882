"""The shared MISSION KI rules (kifabrik.mission_ki): levels from the conservative interval end,
"not assessable", criterion and dimension rules, the catalogue's location."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kifabrik import mission_ki as mk
from kifabrik.errors import KifabrikError

NEED = {1: 0.5, 2: 0.7, 3: 0.85}  # ve.accuracy in thresholds.yaml
NEED_STR = {"1": 0.2, "2": 0.1, "3": 0.05}  # as read back from results.json


def test_threshold_level_guards_nan_and_reads_str_keys() -> None:
    assert mk.threshold_level(0.9, "higher", NEED) == 3 and mk.threshold_level(0.6, "higher", NEED) == 1
    assert mk.threshold_level(0.49, "higher", NEED) == 0
    assert mk.threshold_level(0.04, "lower", NEED_STR) == 3 and mk.threshold_level(0.3, "lower", NEED_STR) == 0
    assert mk.threshold_level(float("nan"), "higher", NEED) is None  # not measured is no level, not a D
    assert mk.threshold_level(None, "lower", NEED_STR) is None


def test_levels_come_from_the_conservative_end_of_the_interval() -> None:
    # 40 of 64: Wilson 0.5025-0.7333 -> the lower end 0.5025 clears need 1 only: C, not B
    acc = mk.Measurement(0.625, 64, 0.5025, 0.7333, "wilson", chance=0.25)
    assert mk.grade(acc, "higher", NEED) == mk.Grade(1, "measured", 0.5025, "")
    # 5 of 8: the same point value, but the lower end 0.306 clears nothing: D
    assert mk.grade(mk.Measurement(0.625, 8, 0.3057, 0.8632), "higher", NEED).level == 0
    # lower is better: the upper end decides (0.12 would be C, the upper end 0.25 is D)
    assert mk.grade(mk.Measurement(0.12, 40, 0.05, 0.25), "lower", NEED_STR).level == 0
    # without an interval the value is taken at face value
    assert mk.grade(mk.Measurement(0.9), "higher", NEED).level == 3


def test_a_measurement_that_is_not_meaningful_is_not_assessable_unless_it_is_a_d() -> None:
    drop = mk.Measurement(0.0, 40, 0.0, 0.01, "bootstrap", meaningful=False, why="accuracy at chance")
    graded = mk.grade(drop, "lower", {1: 0.15, 2: 0.08, 3: 0.04})
    assert graded.level is None and graded.status == mk.NOT_ASSESSABLE and graded.why == "accuracy at chance"
    bad = mk.Measurement(0.5, 40, 0.3, 0.7, meaningful=False, why="accuracy at chance")
    assert mk.grade(bad, "lower", {1: 0.15, 2: 0.08, 3: 0.04}).level == 0  # a bad result needs no proof of meaning


def test_chance_caveat_uses_the_lower_bound() -> None:
    at_chance = mk.Measurement(0.4, 30, 0.24, 0.58, chance=0.3333)
    assert "not significantly above the chance rate 0.333" in mk.chance_caveat("ve.accuracy", at_chance)
    assert mk.chance_caveat("ve.accuracy", mk.Measurement(0.8, 30, 0.63, 0.9, chance=0.3333)) == ""
    assert mk.chance_caveat("x", mk.Measurement(0.8)) != ""  # no interval: nothing shows it is above chance


def test_evidence_and_indicator_level() -> None:
    measured = {"ve.accuracy": mk.Measurement(0.9, 100, 0.83, 0.95),
                "lang.gap": mk.Measurement(0.0, 20, 0.0, 0.0, meaningful=False, why="both languages at chance")}
    thresholds = {"ve.accuracy": {"indicator": "VE1.5", "better": "higher", "need": NEED},
                  "lang.gap": {"indicator": "VE1.5", "better": "lower", "need": {1: 0.25, 2: 0.15, 3: 0.08}}}
    ev = mk.evidence(measured, thresholds)["VE1.5"]
    assert [(e["metric"], e["level"], e["status"]) for e in ev] == [("ve.accuracy", 2, "measured"),
                                                                  ("lang.gap", None, "not assessable")]
    assert mk.indicator_level(ev) == (2, "")  # the meaningful measurement decides
    assert mk.indicator_level(ev[1:]) == (None, "lang.gap: both languages at chance")
    assert mk.evidence_text(ev[0]) == "ve.accuracy = 0.9 (95 % CI 0.83–0.95, n = 100; higher is better) → level B"
    assert mk.evidence_text(ev[1]).endswith("→ not assessable: both languages at chance")


def test_criterion_and_dimension_rules() -> None:
    assert mk.criterion_level([1, 3, 0], ["Normal", "Maximalwert", "Normal"]) == 3
    assert mk.criterion_level([1, 2], ["Normal", "Normal"]) == 2  # 1.5 rounds half up
    assert mk.dimension_passes([2, 3], 2) and not mk.dimension_passes([1, 3], 2)
    assert mk.dimension_status([2, 3], [1, 2]) == "passed"
    assert mk.dimension_status([1, None], [1, 2]) == "not passed"  # already below the highest need
    assert mk.dimension_status([2, None], [1, 2]) == "open"
    assert mk.dimension_status([2, None], [1, 2], not_assessable=True) == mk.NOT_ASSESSABLE
    assert mk.dimension_status([None], [None]) == "no need stated"


def test_catalogue_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mk.CATALOGUE_ENV, raising=False)
    folder = tmp_path / "mk"
    folder.mkdir()
    (folder / "VCIO.json").write_text("{}", encoding="utf-8")
    assert mk.catalogue_path(None) is None
    assert mk.catalogue_path(folder) == folder / "VCIO.json"  # a folder means its VCIO.json
    assert mk.catalogue_path(None, recorded=str(folder)) == folder / "VCIO.json"
    assert mk.catalogue_path(None, recorded=str(tmp_path / "gone.json")) is None  # a recorded one may be gone
    with pytest.raises(KifabrikError, match="MISSION KI catalogue not found"):
        mk.catalogue_path(tmp_path / "missing.json", recorded=str(folder))
    monkeypatch.setenv(mk.CATALOGUE_ENV, str(tmp_path / "nope"))
    with pytest.raises(KifabrikError, match="not found"):
        mk.catalogue_path(None)
    monkeypatch.setenv(mk.CATALOGUE_ENV, str(folder))
    assert mk.catalogue_path(None, recorded="/elsewhere") == folder / "VCIO.json"


def test_recorded_measurements_read_task_and_suite_stats() -> None:
    results = {"metrics": {"task.t.acc": 0.5, "ve.accuracy": 0.5, "x": float("nan")},
               "tasks": [{"name": "t", "stats": {"acc": {"n": 10, "ci_low": 0.24, "ci_high": 0.76}}}],
               "suites": [{"stats": {"ve.accuracy": {"n": 12, "ci_low": 0.25, "ci_high": 0.75, "meaningful": False,
                                                     "why": "w"}}}]}
    m = mk.recorded_measurements(results)
    assert set(m) == {"task.t.acc", "ve.accuracy"} and m["task.t.acc"].n == 10
    assert m["ve.accuracy"].meaningful is False and m["ve.accuracy"].why == "w"
    assert math.isclose(m["ve.accuracy"].bound("higher"), 0.25)
