"""Item counts and 95 % confidence intervals for every reported metric.

- Proportions (accuracy, pass and failure rates, `facts`): the Wilson score interval
  (Wilson 1927; Newcombe 1998, method 3), no continuity correction:

      centre = (p + z²/2n) / (1 + z²/n),   half = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²)

- Means of item scores (chrF, token F1, judge means, consistency) and statistics that are not
  a proportion (bias scores, ECE, corpus chrF, robustness drops): a seeded percentile bootstrap
  over the items, 1000 resamples by default (numpy's PCG64 generator; percentiles with numpy's
  default linear interpolation). The same items and seed give the same interval.

A `Measured` value is a float that carries its count and interval, so suites and tasks can keep
returning plain metric dicts while the interval travels with the number; `stats()` is what the
evaluation records beside it (results.json: `stats` of every task and suite).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import yaml

from kifabrik.mission_ki import Measurement

T = TypeVar("T")
Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal distribution
RESAMPLES = 1000
NAN = float("nan")


class Interval(NamedTuple):
    low: float
    high: float


def wilson_interval(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of `successes` out of `n` (95 % with the default z); NaN for n = 0."""
    if n <= 0:
        return Interval(NAN, NAN)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # clamp the rounding error at the edges: 0/n has lower bound exactly 0, n/n upper bound exactly 1
    return Interval(0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def _indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of resampled index rows (each row: n indices drawn with replacement)."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, 2_000_000 // max(n, 1)))
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _percentiles(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return Interval(NAN, NAN)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(arr, [tail, 100 - tail])
    return Interval(float(low), float(high))


def bootstrap_mean_interval(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of `values`."""
    if not values:
        return Interval(NAN, NAN)
    arr = np.asarray(values, dtype=float)
    means = np.concatenate([arr[idx].mean(axis=1) for idx in _indices(len(arr), resamples, seed)])
    return _percentiles(means)


def bootstrap_sum_interval(vectors: Sequence[Sequence[float]], finish: Callable[[Sequence[float]], float], *,
                           resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Interval of a statistic computed from the *sum* of per-item vectors (corpus chrF: n-gram counts)."""
    if not vectors:
        return Interval(NAN, NAN)
    mat = np.asarray(vectors, dtype=float)
    values = [finish(row.tolist()) for idx in _indices(len(mat), resamples, seed) for row in mat[idx].sum(axis=1)]
    return _percentiles(values)


def bootstrap_interval(rows: Sequence[T], statistic: Callable[[list[T]], float], *, resamples: int = RESAMPLES,
                       seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of any statistic of the rows (resamples giving NaN are left out)."""
    if not rows:
        return Interval(NAN, NAN)
    items = list(rows)
    values = [statistic([items[i] for i in row]) for idx in _indices(len(items), resamples, seed) for row in idx]
    return _percentiles(values)


def stratified_interval(groups: Sequence[Sequence[float]], statistic: Callable[[Sequence[float]], float], *,
                        resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Interval of a statistic of group means, each group resampled on its own (e.g. languages)."""
    if not groups or not all(groups):
        return Interval(NAN, NAN)
    rng = np.random.default_rng(seed)
    means = np.stack([np.asarray(g, dtype=float)[rng.integers(0, len(g), size=(resamples, len(g)))].mean(axis=1)
                      for g in groups], axis=1)  # resamples x groups
    return _percentiles([statistic(row.tolist()) for row in means])


class Measured(float):
    """A metric value with its item count and 95 % interval (it prints and serialises as a float)."""

    n: int
    ci_low: float
    ci_high: float
    method: str
    chance: float | None
    why: str
    seed: int | None

    def __new__(cls, value: float, n: int = 0, interval: tuple[float, float] = (NAN, NAN), method: str = "",
                *, chance: float | None = None, why: str = "", seed: int | None = None) -> Measured:
        obj = super().__new__(cls, value)
        obj.n, obj.ci_low, obj.ci_high, obj.method = int(n), float(interval[0]), float(interval[1]), method
        obj.chance, obj.why, obj.seed = chance, why, seed
        return obj

    @property
    def meaningful(self) -> bool:
        return not self.why

    def caveat(self, why: str) -> Measured:
        """The same value marked as not meaningful (it then cannot earn a level above D)."""
        return Measured(float(self), self.n, (self.ci_low, self.ci_high), self.method, chance=self.chance,
                        why=why, seed=self.seed)

    def measurement(self) -> Measurement:
        return Measurement.of(float(self), self.stats())

    def stats(self) -> dict[str, Any]:
        """What the evaluation records beside the value."""
        out: dict[str, Any] = {"n": self.n, "ci_low": _round(self.ci_low), "ci_high": _round(self.ci_high),
                               "method": self.method}
        if self.method == "bootstrap":
            out.update(resamples=RESAMPLES, seed=self.seed)
        if self.chance is not None:
            out["chance"] = _round(self.chance)
        if self.why:
            out.update(meaningful=False, why=self.why)
        return out


# YAML (like JSON) writes a Measured value as the plain number it is
yaml.SafeDumper.add_representer(Measured, yaml.representer.SafeRepresenter.represent_float)


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def stats_of(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `stats` entries of the measured values in a metrics dict."""
    return {k: v.stats() for k, v in metrics.items() if isinstance(v, Measured)}


def proportion(successes: int, n: int, *, chance: float | None = None) -> Measured:
    """successes / n with its Wilson interval (NaN with n = 0)."""
    return Measured(successes / n if n else NAN, n, wilson_interval(successes, n), "wilson", chance=chance)


def proportion_of(flags: Sequence[bool | float], *, chance: float | None = None) -> Measured:
    """The share of true flags (or 1.0 scores)."""
    return proportion(sum(bool(f) for f in flags), len(flags), chance=chance)


def mean_of(values: Sequence[float], *, seed: int = 0, chance: float | None = None) -> Measured:
    """Mean of item scores with its bootstrap interval."""
    vals = [float(v) for v in values]
    return Measured(sum(vals) / len(vals) if vals else NAN, len(vals), bootstrap_mean_interval(vals, seed=seed),
                    "bootstrap", chance=chance, seed=seed)


def bootstrapped(value: float, rows: Sequence[T], statistic: Callable[[list[T]], float], *, seed: int = 0,
                 n: int | None = None, chance: float | None = None) -> Measured:
    """`value` (the statistic of all rows) with the bootstrap interval of the same statistic."""
    return Measured(value, len(rows) if n is None else n, bootstrap_interval(rows, statistic, seed=seed), "bootstrap",
                    chance=chance, seed=seed)


def exact(value: float, n: int) -> Measured:
    """A count, not an estimate (e.g. the number of languages): its interval is the value itself."""
    return Measured(value, n, (value, value), "exact")
