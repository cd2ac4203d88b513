"""The reward model as a batch scorer on the mesh: utilities of every (candidate, member) pair of
batches of groups, through `programs.rm_scorer` (models.reward.score_groups, the same on-device
path the consensus program uses), on token ids built exactly as the RM tasks build them
(data.prompts: prefix truncated to the inputs length, candidate suffix + EOS to the targets
length). What is measured with it: studies/rm_report (synthetic ratings), studies/polis_rm.
"""
import dataclasses
from typing import Any, Iterable, Optional, Sequence

import jax
import numpy as np
import seqio
from jax.sharding import Mesh

from consensus_jax import partitioning, programs
from consensus_jax.data import prompts, records
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
               lengths: Lengths, chunk_size: int = 64, mesh: Optional[Mesh] = None):
    """params: anywhere (host or already on the mesh); placed on `mesh` (None: one device)
    with the rule table's shardings."""
    self.mesh = partitioning.single_device_mesh() if mesh is None else mesh
    self.vocabulary, self.lengths = vocabulary, lengths
    self.params = jax.device_put(params, programs.reward_shardings(config, self.mesh))
    self._score = programs.rm_scorer(config, self.mesh, chunk_size=chunk_size)

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
    return np.asarray(self._score.run_on_host_batch(
        (self.params,), (prefix_BMQ, prefix_len_BM, cand_BNC, cand_len_BN)))


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
