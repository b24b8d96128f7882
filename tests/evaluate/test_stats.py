"""Confidence intervals against known values.

Wilson: the score interval of Wilson (1927), as Newcombe (1998, method 3) writes it, without
continuity correction. The expected numbers were printed by scipy 1.17.1,
`scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`; the closed forms for 0/n and n/n
(upper bound z²/(n+z²), lower bound n/(n+z²)) follow from the formula with p = 0 or 1.
"""

from __future__ import annotations

import json
import math

import pytest

from kifabrik.evaluate.stats import (Z95, Measured, bootstrap_interval, bootstrap_mean_interval, mean_of, proportion,
                                     stratified_interval, wilson_interval)

WILSON_SCIPY = {  # (k, n): (low, high) from scipy 1.17.1
    (7, 16): (0.23098652405492354, 0.6682144360118811),
    (0, 16): (0.0, 0.1936076805344365),
    (16, 16): (0.8063923194655637, 1.0),
    (40, 64): (0.502503786840045, 0.7333401982117536),
    (1, 1): (0.20654931437723745, 1.0),
}


@pytest.mark.parametrize(("k", "n"), sorted(WILSON_SCIPY))
def test_wilson_matches_the_published_values(k: int, n: int) -> None:
    assert tuple(wilson_interval(k, n)) == pytest.approx(WILSON_SCIPY[(k, n)], abs=1e-12)


def test_wilson_closed_forms_at_the_edges_and_scipy_if_installed() -> None:
    z2 = Z95 ** 2
    assert wilson_interval(0, 16).high == pytest.approx(z2 / (16 + z2), abs=1e-15)
    assert wilson_interval(16, 16).low == pytest.approx(16 / (16 + z2), abs=1e-15)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes must lie in 0..4"):
        wilson_interval(5, 4)
    stats = pytest.importorskip("scipy.stats")
    for k, n in ((3, 30), (29, 30), (512, 1000)):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert tuple(wilson_interval(k, n)) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_bootstrap_is_seeded_and_agrees_with_the_normal_approximation() -> None:
    values = [0.0, 1.0] * 100  # mean 0.5, standard error sqrt(0.25 / 200) = 0.03536
    low, high = bootstrap_mean_interval(values, seed=0)
    assert (low, high) == bootstrap_mean_interval(values, seed=0)  # same items, same seed: same interval
    assert (low, high) != bootstrap_mean_interval(values, seed=1)
    # the normal approximation 0.5 ± 1.96 · 0.03536 = [0.4307, 0.5693]; 1000 resamples land within 0.01 of it
    assert low == pytest.approx(0.5 - Z95 * math.sqrt(0.25 / 200), abs=0.01)
    assert high == pytest.approx(0.5 + Z95 * math.sqrt(0.25 / 200), abs=0.01)
    assert tuple(bootstrap_mean_interval([0.7] * 12)) == pytest.approx((0.7, 0.7))  # no spread, no width
    # a statistic that is no mean: the generic bootstrap of the mean agrees with the fast path exactly
    generic = bootstrap_interval(values, lambda rows: sum(rows) / len(rows), seed=0)
    assert tuple(generic) == pytest.approx((low, high), abs=1e-12)


def test_stratified_interval_resamples_each_group() -> None:
    groups = [[1.0] * 10, [0.0] * 10]  # no spread inside a group: every resample gives the gap 1
    assert tuple(stratified_interval(groups, lambda m: max(m) - min(m))) == (1.0, 1.0)


def test_measured_values_are_floats_that_carry_n_and_interval() -> None:
    m = proportion(7, 16, chance=0.25)
    assert float(m) == 7 / 16 and m.n == 16 and (m.ci_low, m.ci_high) == pytest.approx(WILSON_SCIPY[(7, 16)])
    assert json.loads(json.dumps({"acc": m})) == {"acc": 0.4375}  # records and meta keep plain numbers
    assert m.stats() == {"n": 16, "ci_low": 0.230987, "ci_high": 0.668214, "method": "wilson", "chance": 0.25}
    caveat = m.caveat("not above chance")
    assert float(caveat) == float(m) and caveat.stats()["meaningful"] is False and caveat.stats()["why"] == "not above chance"
    mean = mean_of([0.2, 0.4, 0.9], seed=3)
    assert mean.stats()["method"] == "bootstrap" and mean.stats()["resamples"] == 1000 and mean.stats()["seed"] == 3
    empty = Measured(float("nan"))
    assert empty.n == 0 and empty.stats()["ci_low"] is None


def test_measured_values_serialise_as_plain_numbers() -> None:
    import pickle

    import yaml

    m = proportion(3, 10).caveat("why")
    assert yaml.safe_load(yaml.safe_dump({"rate": m})) == {"rate": 0.3}
    back = pickle.loads(pickle.dumps(m))
    assert (float(back), back.n, back.ci_low, back.why) == (0.3, 10, m.ci_low, "why")
