"""Metrics of reward-model predictions against held-out human (or simulated) judgements."""
from typing import Sequence

import numpy as np
from scipy import stats


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
    return float("nan")
  return float(np.corrcoef(x, y)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  return pearson(stats.rankdata(x), stats.rankdata(y))


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
  """Area under the ROC curve: P(score of a random positive > a random negative), ties 1/2."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    return float("nan")
  ranks = stats.rankdata(scores)  # Average ranks handle ties.
  return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def pairwise_accuracy(predicted_NM: np.ndarray, ratings_NM: np.ndarray,
                      present_NM: np.ndarray) -> tuple[int, int]:
  """Within each member (column): pairs of candidates the member rated differently, and how
  many of those the predictions order the same way (a predicted tie counts as half)."""
  correct = total = 0.0
  for m in range(ratings_NM.shape[1]):
    rated = np.flatnonzero(present_NM[:, m])
    r, p = ratings_NM[rated, m], predicted_NM[rated, m]
    dr = np.sign(r[:, None] - r[None, :])
    dp = np.sign(p[:, None] - p[None, :])
    upper = np.triu(np.ones_like(dr, dtype=bool), 1) & (dr != 0)
    total += upper.sum()
    correct += (dr[upper] == dp[upper]).sum() + 0.5 * (dp[upper] == 0).sum()
  return correct, total
