"""Statistics a sign-off can quote: exact binomial bounds and intervals."""

from __future__ import annotations

import math


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
