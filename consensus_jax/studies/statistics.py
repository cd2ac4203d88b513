"""The studies' statistics: win rates with confidence intervals, paired effects with p-values.

Win rates compare two systems group by group (a win 1, a tie 1/2, a loss 0); the 95% interval
is Wilson's score interval on that share, with ties counted as half a win (an approximation
that is exact without ties). Paired effects (the exclusion study) use the one-sample t
distribution over groups.
"""
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
  if n <= 0:
    return (float("nan"), float("nan"))
  p = successes / n
  denominator = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denominator
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
  # The interval always holds p itself (rounding can put centre - half just above 0 at p = 0).
  return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def win_share(a_G: np.ndarray, b_G: np.ndarray) -> tuple[float, tuple[float, float]]:
  """Share of groups where A's score beats B's (ties half) and its 95% interval."""
  a_G, b_G = np.asarray(a_G, np.float64), np.asarray(b_G, np.float64)
  if a_G.shape != b_G.shape:
    raise ValueError(f"win_share: {a_G.shape} scores against {b_G.shape}")
  wins = float(np.sum(a_G > b_G) + 0.5 * np.sum(a_G == b_G))
  n = int(a_G.size)
  return (wins / n if n else float("nan")), wilson_interval(wins, n)


def win_rate_matrix(scores_SG: np.ndarray, names: Sequence[str]):
  """{A: {B: share of groups A beats B}} and {A: {B: [low, high]}} for every pair of systems."""
  rates, intervals = {}, {}
  for i, a in enumerate(names):
    rates[a], intervals[a] = {}, {}
    for j, b in enumerate(names):
      if i == j:
        continue
      share, interval = win_share(scores_SG[i], scores_SG[j])
      rates[a][b], intervals[a][b] = share, list(interval)
  return rates, intervals


def paired_effect(differences_G: np.ndarray) -> dict[str, float]:
  """Mean of per-group differences, its 95% t interval and the two-sided p-value of mean 0."""
  d = np.asarray(differences_G, np.float64)
  n = int(d.size)
  if n < 2:
    return {"mean": float(d.mean()) if n else float("nan"), "ci_low": float("nan"),
            "ci_high": float("nan"), "p_value": float("nan"), "n": n}
  mean, sem = float(d.mean()), float(d.std(ddof=1) / math.sqrt(n))
  if sem == 0.0:
    p_value = 1.0 if mean == 0.0 else 0.0
    return {"mean": mean, "ci_low": mean, "ci_high": mean, "p_value": p_value, "n": n}
  t_crit = float(stats.t.ppf(0.975, n - 1))
  p_value = float(2 * stats.t.sf(abs(mean / sem), n - 1))
  return {"mean": mean, "ci_low": mean - t_crit * sem, "ci_high": mean + t_crit * sem,
          "p_value": p_value, "n": n}


def mean_interval(values: np.ndarray) -> dict[str, float]:
  """A mean with its 95% t interval."""
  effect = paired_effect(values)
  return {"mean": effect["mean"], "ci_low": effect["ci_low"], "ci_high": effect["ci_high"],
          "n": effect["n"]}
