"""The Polis reward model at evaluation: a trained checkpoint as a scorer of (member prefix,
candidate) pairs, and its predictions for held-out votes in either mode.

Modes (data/polis_examples.py): "new" sees the member's other votes and the candidate's text;
"existing" also sees how the conversation's training participants (never the member) voted on
the candidate.
"""
import dataclasses
import pathlib
from collections.abc import Sequence

import jax
import numpy as np

from consensus_jax import checkpointing, rm_eval
from consensus_jax.data import polis, polis_examples, polis_votes, vocab

MODES = ("new", "existing")


@dataclasses.dataclass
class PolisRewardModel:
  scorer: rm_eval.Scorer
  step: int
  model_dir: str
  batch_size: int = 64
  _tables: dict = dataclasses.field(default_factory=dict)

  def table(self, conversation: polis.Conversation) -> polis_votes.VoteTable:
    if conversation.name not in self._tables:
      self._tables[conversation.name] = polis_votes.VoteTable(conversation)
    return self._tables[conversation.name]

  def score_pairs(self, prefixes: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
    """One utility in [0, 1] per (prefix, candidate) pair."""
    scores = []
    for start in range(0, len(prefixes), self.batch_size):
      chunk = range(start, min(start + self.batch_size, len(prefixes)))
      utilities_BNM = self.scorer.utilities(
          [[self.scorer.prefix_ids(prefixes[i])] for i in chunk],
          [[self.scorer.candidate_ids(candidates[i])] for i in chunk])
      scores.extend(utilities_BNM[:, 0, 0].tolist())
    return np.asarray(scores, np.float64)

  def score_members(self, prefixes_M: Sequence[str],
                    candidates_MK: Sequence[Sequence[str]]) -> np.ndarray:
    """[members, candidates] utilities: each member's own prefix against their own rendering of
    every candidate (in existing-statement mode the rendering depends on the member)."""
    rows = self.batch_size // max(1, max(len(c) for c in candidates_MK))
    out = []
    for start in range(0, len(prefixes_M), max(1, rows)):
      chunk = range(start, min(start + max(1, rows), len(prefixes_M)))
      utilities_BNM = self.scorer.utilities(
          [[self.scorer.prefix_ids(prefixes_M[m])] for m in chunk],
          [[self.scorer.candidate_ids(c) for c in candidates_MK[m]] for m in chunk])
      out.append(utilities_BNM[:, :, 0])
    return np.concatenate(out)[:, :len(candidates_MK[0])]

  def vote_scorer(self, mode: str):
    """A polis_peers.MemberScorer: the RM's score for each of a held-out member's votes, the
    member's context drawn from their other votes (as in training)."""
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

    def score(conversation: polis.Conversation, member: int, targets_T: np.ndarray,
              train_ids: np.ndarray) -> np.ndarray:
      examples = {e.comment_id: e for e in polis_examples.vote_examples(
          conversation, member_order=[member], others=train_ids,
          existing_share=1.0 if mode == "existing" else 0.0, min_context_votes=0,
          table=self.table(conversation))}
      chosen = [examples[int(conversation.comment_ids[c])] for c in targets_T]
      return self.score_pairs([e.prefix for e in chosen], [e.candidate for e in chosen])

    return score


def load(model_dir: str, objective, vocab_dir: str, vocab_size: int = 8000,
         lengths: rm_eval.Lengths = rm_eval.Lengths(160, 64),
         checkpoint_step: int | None = None) -> PolisRewardModel:
  """The latest (or the given) checkpoint of a Polis RM run (runs/reward_polis.gin)."""
  params, step = checkpointing.load_latest_params(pathlib.Path(model_dir),
                                                  objective.abstract_params(), checkpoint_step)
  scorer = rm_eval.Scorer(objective.config, jax.device_get(params),
                          vocab.get_vocabulary(vocab_dir, vocab_size), lengths)
  return PolisRewardModel(scorer=scorer, step=step, model_dir=str(model_dir))
