"""The rows a reward-model evaluation scores, and the metrics every predictor gets on them.

A row is one rated (member, candidate) pair of one round. Every predictor (the RM, its peers,
the simulator's ceiling) is asked for a prediction on every row, in the same order, and gets
the same metrics: MAE on the 1-7 scale, Pearson and Spearman over rows, pairwise accuracy
within each member (pairs of candidates the member rated differently, a predicted tie half),
and `member_spread` (how far it tells a group's members apart).
"""
import dataclasses
from collections.abc import Sequence

import numpy as np

from consensus_jax import rm_metrics
from consensus_jax.data import records


@dataclasses.dataclass(frozen=True)
class RatingRows:
  """Row r: rounds[round_R[r]], member member_R[r] (index into its opinions), candidate
  candidate_R[r] (index into its candidates), rated rating_R[r] (1-7)."""
  rounds: tuple[records.Round, ...]
  round_R: np.ndarray
  member_R: np.ndarray
  candidate_R: np.ndarray
  rating_R: np.ndarray

  def __len__(self) -> int:
    return int(self.rating_R.size)


def collect(rounds: Sequence[records.Round]) -> RatingRows:
  round_R, member_R, candidate_R, rating_R = [], [], [], []
  for g, round_ in enumerate(rounds):
    candidate_ids = round_.candidate_ids
    for m, member in enumerate(round_.participant_ids):
      for n, candidate in enumerate(candidate_ids):
        rating = round_.agreement.get(member, {}).get(candidate)
        if rating is not None:
          round_R.append(g), member_R.append(m), candidate_R.append(n), rating_R.append(rating)
  as_int = lambda x: np.asarray(x, np.int64)
  return RatingRows(tuple(rounds), as_int(round_R), as_int(member_R), as_int(candidate_R),
                    np.asarray(rating_R, np.float64))


def from_group_arrays(rows: RatingRows, predicted_G) -> np.ndarray:
  """Row predictions from per-round arrays predicted_G[g][candidate, member]."""
  return np.array([predicted_G[g][n, m] for g, m, n in
                   zip(rows.round_R, rows.member_R, rows.candidate_R)], np.float64)


def metrics(rows: RatingRows, predicted_R: np.ndarray) -> dict[str, float]:
  """MAE (1-7), Pearson, Spearman and within-member pairwise accuracy of predictions."""
  predicted_R = np.asarray(predicted_R, np.float64)
  if predicted_R.shape != rows.rating_R.shape:
    raise ValueError(f"{predicted_R.shape[0]} predictions for {len(rows)} rows")
  correct = total = 0.0
  keys = rows.round_R * 1000 + rows.member_R
  for key in np.unique(keys):
    picked = keys == key
    r, p = rows.rating_R[picked], predicted_R[picked]
    c, t = rm_metrics.pairwise_accuracy(p[:, None], r[:, None], np.ones((r.size, 1), bool))
    correct, total = correct + c, total + t
  return {"rows": len(rows), "pairs": int(total),
          "pairwise_accuracy": correct / max(total, 1),
          "pearson": rm_metrics.pearson(predicted_R, rows.rating_R),
          "spearman": rm_metrics.spearman(predicted_R, rows.rating_R),
          "mae_1_to_7": float(np.mean(np.abs(np.clip(predicted_R, 1, 7) - rows.rating_R)))}


def member_spread(rows: RatingRows, predicted_R: np.ndarray) -> dict[str, float]:
  """How far a predictor tells a group's members apart on the same candidate.

  spread: the mean over (round, candidate) of the standard deviation across members;
  across_member_pearson: Pearson of predictions and ratings after removing each (round,
  candidate)'s mean over members, so only the members' differences count.
  """
  keys = rows.round_R * 1000 + rows.candidate_R
  spreads, centred_p, centred_r = [], [], []
  for key in np.unique(keys):
    picked = keys == key
    if picked.sum() < 2:
      continue
    p, r = predicted_R[picked], rows.rating_R[picked]
    spreads.append(np.std(p))
    centred_p.append(p - p.mean()), centred_r.append(r - r.mean())
  if not spreads:
    return {"member_spread": float("nan"), "across_member_pearson": float("nan")}
  return {"member_spread": float(np.mean(spreads)),
          "across_member_pearson": rm_metrics.pearson(np.concatenate(centred_p),
                                                      np.concatenate(centred_r))}
