"""The Polis reward model at evaluation: a trained checkpoint as a scorer of (member prefix,
candidate) pairs, and its predictions for held-out votes in either mode.

Modes (data/polis_examples.py): "new" sees the member's other votes and the candidate's text;
"existing" also sees how the conversation's training participants (never the member) voted on
the candidate.
"""
import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from consensus_jax import partitioning, reward_scoring, serving
from consensus_jax.data import polis, polis_examples, polis_votes, vocab

MODES = ("new", "existing")


@dataclasses.dataclass
class PolisRewardModel:
  scorer: reward_scoring.Scorer
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
    prefix_ids = [[self.scorer.prefix_ids(p)] for p in prefixes]
    candidate_ids = [[self.scorer.candidate_ids(c)] for c in candidates]
    out = []
    for start in range(0, len(prefix_ids), self.batch_size):
      chunk = slice(start, start + self.batch_size)
      prefixes_B, candidates_B = prefix_ids[chunk], candidate_ids[chunk]
      real = len(prefixes_B)
      # Every call has the same shape: one compiled program, not one per remainder size.
      prefixes_B += [prefixes_B[0]] * (self.batch_size - real)
      candidates_B += [candidates_B[0]] * (self.batch_size - real)
      out.append(self.scorer.utilities(prefixes_B, candidates_B)[:real, 0, 0])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

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
         lengths: reward_scoring.Lengths = reward_scoring.Lengths(160, 64),
         checkpoint_step: int | None = None, mesh=None) -> PolisRewardModel:
  """The latest (or the given) checkpoint of a Polis RM run (runs/reward_polis.gin), restored
  onto `mesh` (None: partitioning.make_mesh())."""
  mesh = partitioning.make_mesh() if mesh is None else mesh
  params, step = serving.load_reward_model(pathlib.Path(model_dir), objective.config, mesh,
                                           checkpoint_step)
  scorer = reward_scoring.Scorer(objective.config, params,
                                 vocab.get_vocabulary(vocab_dir, vocab_size), lengths, mesh=mesh)
  return PolisRewardModel(scorer=scorer, step=step, model_dir=str(model_dir))
