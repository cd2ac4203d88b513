"""A Polis conversation's agree / disagree votes as a table, and what other participants' votes
say about one member's vote on a statement: the statement's agree rate among them, and the
votes of the ones who vote most like the member (collaborative filtering by nearest
participants). Shared by the peers (studies/polis_peers), the RM's inputs in existing-statement
mode (polis_examples) and the selection benchmark.

Letters: P participants, C comments (the conversation's columns), T target statements,
K nearest participants.
"""
import dataclasses
import functools

import numpy as np

from consensus_jax.data import polis, statement_similarity


class VoteTable:
  """Agree (+1) / disagree (-1) / no vote (0) of a conversation's participants, passes dropped,
  restricted to candidate statements."""

  def __init__(self, conversation: polis.Conversation):
    self.conversation = conversation
    self.candidate_C = np.array([conversation.comments[int(c)].is_candidate
                                 for c in conversation.comment_ids], bool).reshape(-1)
    self.about_me_C = np.array([conversation.comments[int(c)].is_self_description
                                for c in conversation.comment_ids], bool).reshape(-1)
    voted_PC = conversation.seen_PC & (conversation.votes_PC != polis.PASS) & self.candidate_C
    self.votes_PC = np.where(voted_PC, conversation.votes_PC, 0).astype(np.float64)

  @functools.cached_property
  def similarity_CC(self) -> np.ndarray:
    """[C, C] bag-of-words cosine similarity of the statements (statement_similarity)."""
    return statement_similarity.similarity_CC(self.conversation)

  def member_rate_loo(self, rows_P: np.ndarray) -> np.ndarray:
    """[len(rows), C]: each member's agree rate over their votes other than that statement."""
    votes_PC = self.votes_PC[rows_P]
    agree_P = (votes_PC > 0).sum(1, keepdims=True)
    count_P = (votes_PC != 0).sum(1, keepdims=True)
    own_agree_PC = (votes_PC > 0).astype(np.float64)
    own_count_PC = (votes_PC != 0).astype(np.float64)
    return (agree_P - own_agree_PC + 1) / (count_P - own_count_PC + 2)

  def statement_rate(self, rows_P: np.ndarray, leave_out_self: bool = False) -> np.ndarray:
    """[len(rows), C] (leave_out_self) or [C]: agree rate of the statement among `rows_P`."""
    votes_PC = self.votes_PC[rows_P]
    agree_C, count_C = (votes_PC > 0).sum(0), (votes_PC != 0).sum(0)
    if not leave_out_self:
      return (agree_C + 1) / (count_C + 2)
    return (agree_C - (votes_PC > 0) + 1) / (count_C - (votes_PC != 0) + 2)


def neighbour_scores(table: VoteTable, train_P: np.ndarray, member: int, targets_T: np.ndarray,
                     k: int = 20, min_overlap: int = 3) -> np.ndarray:
  return neighbour_votes(table, train_P, member, targets_T, k, min_overlap)[0]


def neighbour_votes(table: VoteTable, train_P: np.ndarray, member: int, targets_T: np.ndarray,
                    k: int = 20, min_overlap: int = 3,
                    hidden_C: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """For one member: the mean vote on each target of the k participants of `train_P` most
  similar to the member on the statements both voted on (excluding that target), weighted by
  that similarity; and whether any such participant voted on the target (else the score is 0).
  hidden_C: columns whose votes of the member are not used at all (a selection's candidates)."""
  votes_C = table.votes_PC[member]
  if hidden_C is not None:
    votes_C = votes_C.copy()
    votes_C[np.asarray(hidden_C, np.int64)] = 0
  others_PC = table.votes_PC[train_P]
  # Agreement and overlap over all of the member's votes, then each target's own term removed.
  products_P = others_PC @ votes_C
  overlap_P = (others_PC != 0).astype(np.float64) @ (votes_C != 0).astype(np.float64)
  others_TP = others_PC[:, targets_T].T
  mine_T = votes_C[targets_T]
  overlap_TP = overlap_P[None, :] - ((others_TP != 0) & (mine_T[:, None] != 0))
  agreement_TP = (products_P[None, :] - others_TP * mine_T[:, None]) / np.maximum(overlap_TP, 1)
  eligible_TP = (others_TP != 0) & (overlap_TP >= min_overlap)
  ranked_TP = np.where(eligible_TP, agreement_TP, -np.inf)
  nearest_TK = np.argsort(-ranked_TP, axis=1, kind="stable")[:, :k]
  chosen_TK = np.take_along_axis(eligible_TP, nearest_TK, axis=1)
  weights_TK = np.where(chosen_TK, np.maximum(
      np.take_along_axis(agreement_TP, nearest_TK, axis=1), 0) + 1e-3, 0.0)
  votes_TK = np.take_along_axis(others_TP, nearest_TK, axis=1)
  total_T = weights_TK.sum(1)
  score_T = np.where(total_T > 0, (weights_TK * votes_TK).sum(1) / np.maximum(total_T, 1e-12), 0.0)
  return score_T, total_T > 0


def agree_share(neighbour_score_T: np.ndarray) -> np.ndarray:
  """A neighbour score (mean vote in [-1, 1]) as the share of neighbours who agree."""
  return (np.asarray(neighbour_score_T) + 1.0) / 2.0


@dataclasses.dataclass(frozen=True)
class VoteSummary:
  """What others' votes say about one member's vote on each target statement (shares in [0, 1])."""
  everyone_T: np.ndarray  # the statement's agree rate among the others (Laplace-smoothed)
  similar_T: np.ndarray  # agree share among the k others who vote most like the member
  similar_found_T: np.ndarray  # bool: at least one such participant voted on the target


def summarise(table: VoteTable, member: int, targets_T: np.ndarray, others_P: np.ndarray,
              k: int = 20, hidden_C: np.ndarray | None = None) -> VoteSummary:
  """Others' votes on each target, for row `member`; `others_P` (rows) must not hold the member
  (nor, in a selection study, any of the group's members). The member's own vote on a target
  never counts; `hidden_C` hides more of their votes from the similarity (a selection's whole
  candidate set)."""
  others_P = np.asarray(others_P)
  if np.any(others_P == member):
    raise ValueError(f"summarise: the member (row {member}) is among the others")
  score_T, found_T = neighbour_votes(table, others_P, member, targets_T, k, hidden_C=hidden_C)
  return VoteSummary(everyone_T=table.statement_rate(others_P)[targets_T],
                     similar_T=np.where(found_T, agree_share(score_T), 0.5),
                     similar_found_T=found_T)

