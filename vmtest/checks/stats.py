"""Statistics a sign-off can quote: exact binomial bounds and intervals."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def clopper_pearson_upper(failures: int, trials: int, confidence: float = 0.95) -> float:
    """The exact one-sided upper bound on a rate after ``failures`` in ``trials``.

    With 0 failures in n trials this is 1 - (1 - confidence) ** (1 / n): "with 95% confidence,
    fewer than this fraction of the population differs".
    """
    if trials <= 0:
        return 1.0
    if failures >= trials:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, failures + 1, trials - failures))


def sample_size_for(max_rate: float, confidence: float = 0.95) -> int:
    """The smallest n such that 0 failures in n trials proves the rate < max_rate."""
    if not 0 < max_rate < 1:
        raise ValueError("max_rate must be between 0 and 1")
    return math.ceil(math.log(1 - confidence) / math.log(1 - max_rate))


def wilson_interval(successes: float, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    if trials <= 0:
        return (0.0, 1.0)
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def clopper_pearson_interval(failures: int, trials: int, confidence: float = 0.95
                             ) -> tuple[float, float]:
    """The exact two-sided interval on a rate after ``failures`` in ``trials``."""
    if trials <= 0:
        return 0.0, 1.0
    from scipy.stats import beta

    alpha = 1 - confidence
    low = 0.0 if failures <= 0 else float(beta.ppf(alpha / 2, failures, trials - failures + 1))
    high = 1.0 if failures >= trials else float(
        beta.ppf(1 - alpha / 2, failures + 1, trials - failures))
    return low, high


#: The three answers a gate on a measured figure gives.
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


def decide(low: float, high: float, limit: float) -> str:
    """A gate "figure <= limit" on an interval: fail when the whole interval lies above the
    limit, pass when it lies at or below it, inconclusive when it straddles it."""
    if low > limit:
        return FAIL
    if high <= limit:
        return PASS
    return INCONCLUSIVE


def more_samples_to_decide(n: int, estimate: float, low: float, high: float,
                           limit: float) -> int:
    """How many more samples would make an interval of this width clear the limit, assuming
    it narrows as 1/sqrt(n) around the same estimate (0 if it cannot: estimate on the limit)."""
    half = max(estimate - low, high - estimate)
    gap = abs(estimate - limit)
    if gap <= 0 or half <= 0:
        return 0
    return max(1, math.ceil(n * (half / gap) ** 2) - n)


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n: int, *,
                       confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                       ) -> tuple[float, float]:
    """A percentile bootstrap interval: ``statistic`` takes an index array of shape
    (resamples, n) drawn with replacement from range(n) and returns one value per row."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = statistic(rng.integers(0, n, size=(resamples, n)))
    alpha = 1 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
