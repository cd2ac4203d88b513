"""Evaluates a reward model on held-out synthetic ratings (held-out Polis votes: studies/polis_rm
and studies/polis_peers, which eval.evaluate_reward_model calls).

Scoring goes through `models.reward.score_groups`, the same on-device path the consensus program
uses, on token ids built exactly as the RM tasks build them (prefix truncated to the inputs
length, candidate suffix + EOS to the targets length).

Synthetic rounds: MAE on the 1-7 scale (prediction 1 + 6 x utility), Pearson and Spearman over
all (candidate, member) ratings, pairwise accuracy within each member (pairs of candidates the
member rated differently) and how far the predictions tell members apart, for the RM and, on
exactly the same rows, its reference predictors (studies.rm_peers: chance, a bag-of-words ridge
peer, the other members' ratings, the simulator's noise-free ceiling).
"""
import dataclasses
import functools
from typing import Any, Iterable, Optional, Sequence

import jax
import numpy as np
import seqio

from consensus_jax import rm_metrics
from consensus_jax.data import prompts, records
from consensus_jax.models import reward
from consensus_jax.studies import rating_rows, rm_peers
from consensus_jax.models.config import DecoderConfig


@dataclasses.dataclass(frozen=True)
class Lengths:
  prefix: int = 128
  candidate: int = 96


def _pad_rows(rows: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  out = np.zeros((len(rows), length), np.int32)
  lengths = np.zeros((len(rows),), np.int32)
  for i, row in enumerate(rows):
    row = list(row)[:length]
    out[i, :len(row)] = row
    lengths[i] = len(row)
  return out, lengths


class Scorer:
  """Utilities for batches of groups: [B, members] prefixes x [B, candidates] candidates."""

  def __init__(self, config: DecoderConfig, params: Any, vocabulary: seqio.Vocabulary,
               lengths: Lengths, chunk_size: int = 64):
    self.vocabulary, self.lengths, self.params = vocabulary, lengths, params
    self._score = jax.jit(functools.partial(reward.score_groups, config,
                                            chunk_size=chunk_size))

  def prefix_ids(self, text: str) -> list[int]:
    return prompts.rm_prefix_ids(self.vocabulary, text, self.lengths.prefix)

  def candidate_ids(self, text: str) -> list[int]:
    return prompts.rm_candidate_ids(self.vocabulary, text, self.lengths.candidate)

  def utilities(self, prefixes: Sequence[Sequence[Sequence[int]]],
                candidates: Sequence[Sequence[Sequence[int]]]) -> np.ndarray:
    """prefixes[b][m], candidates[b][n] as id lists (ragged) -> utilities [B, N_max, M_max]."""
    members = max(len(p) for p in prefixes)
    num = max(len(c) for c in candidates)
    prefix_BMQ = np.zeros((len(prefixes), members, self.lengths.prefix), np.int32)
    prefix_len_BM = np.ones((len(prefixes), members), np.int32)
    cand_BNC = np.zeros((len(prefixes), num, self.lengths.candidate), np.int32)
    cand_len_BN = np.ones((len(prefixes), num), np.int32)
    for b, (group_prefixes, group_candidates) in enumerate(zip(prefixes, candidates)):
      rows, lens = _pad_rows(group_prefixes, self.lengths.prefix)
      prefix_BMQ[b, :len(rows)], prefix_len_BM[b, :len(rows)] = rows, lens
      rows, lens = _pad_rows(group_candidates, self.lengths.candidate)
      cand_BNC[b, :len(rows)], cand_len_BN[b, :len(rows)] = rows, lens
    return np.asarray(self._score(self.params, prefix_BMQ, prefix_len_BM, cand_BNC, cand_len_BN))


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def predict_rounds(scorer: Scorer, rounds: Sequence[records.Round],
                   groups_per_batch: int = 4) -> list[np.ndarray]:
  """The RM's predicted agreement (1-7) of every member with every candidate: per round an
  array [candidates, members]."""
  predicted = []
  for batch in _batches(list(rounds), groups_per_batch):
    prefixes = [[scorer.prefix_ids(prompts.rm_prefix(r.question.text, o.text))
                 for o in r.opinions] for r in batch]
    candidates = [[scorer.candidate_ids(c.text) for c in r.candidates] for r in batch]
    utilities_BNM = scorer.utilities(prefixes, candidates)
    for b, round_ in enumerate(batch):
      predicted.append(1.0 + 6.0 * utilities_BNM[b, :len(round_.candidates),
                                                 :len(round_.opinions)])
  return predicted


def evaluate_rounds(scorer: Scorer, rounds: Sequence[records.Round],
                    bag_of_words: Optional[rm_peers.BagOfWordsPeer] = None,
                    groups_per_batch: int = 4) -> dict[str, dict[str, float]]:
  """The RM and its reference predictors on exactly the same rated rows.

  Returns {predictor: metrics}: "reward_model", "chance", "bag_of_words" (when given),
  "other_members", "simulator_ceiling" (synthetic rounds), and "ratings" (the true ratings'
  own member spread, the scale member_spread compares against).
  """
  rows = rating_rows.collect(rounds)
  predicted_R = rating_rows.from_group_arrays(rows, predict_rounds(scorer, rounds,
                                                                   groups_per_batch))
  results = {"reward_model": {**rating_rows.metrics(rows, predicted_R),
                              **rating_rows.member_spread(rows, predicted_R)}}
  results.update(rm_peers.reference_metrics(rows, bag_of_words))
  results["ratings"] = {"groups": len(rounds),
                        **rating_rows.member_spread(rows, rows.rating_R)}
  return results


_LEADING_KEYS = ("pairwise_accuracy", "pearson", "mae_1_to_7", "member_spread",
                 "across_member_pearson", "auc_reward_model", "auc_statement_agree_rate")


def markdown_table(results: dict[str, dict[str, float]]) -> str:
  if not results:
    return ""
  present = {k for metrics in results.values() for k in metrics}
  keys = [k for k in _LEADING_KEYS if k in present] + sorted(present - set(_LEADING_KEYS))
  lines = ["| set | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
  for name, metrics in results.items():
    cells = [_format(metrics.get(k, "")) for k in keys]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:.3f}"
  return str(value)
