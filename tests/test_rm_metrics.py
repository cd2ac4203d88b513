"""RM evaluation metrics against direct computations."""
import itertools

import numpy as np
import pytest
from scipy import stats

from consensus_jax import rm_metrics


def test_auc_equals_pairwise_definition():
  rng = np.random.RandomState(0)
  scores = rng.choice([0.1, 0.4, 0.5, 0.9], 40)  # Many ties.
  labels = rng.randint(0, 2, 40)
  pos, neg = scores[labels == 1], scores[labels == 0]
  expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0
                      for p, n in itertools.product(pos, neg)])
  assert rm_metrics.auc(scores, labels) == pytest.approx(expected)
  assert rm_metrics.auc(labels, labels) == 1.0
  assert np.isnan(rm_metrics.auc(scores, np.ones(40)))


def test_correlations_match_scipy():
  rng = np.random.RandomState(1)
  x, y = rng.randn(30), rng.randn(30)
  assert rm_metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
  assert rm_metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_pairwise_accuracy_counts_within_members_only():
  ratings = np.array([[7, 1], [4, 1], [1, 5]])
  predicted = np.array([[0.9, 0.2], [0.9, 0.8], [0.1, 0.5]])
  present = np.array([[1, 1], [1, 1], [1, 0]], bool)
  correct, total = rm_metrics.pairwise_accuracy(predicted, ratings, present)
  # Member 0: pairs (0,1) tie predicted -> 0.5, (0,2) right, (1,2) right. Member 1: (0,1) equal
  # ratings -> no pair; candidate 2 absent.
  assert (correct, total) == (2.5, 3)
