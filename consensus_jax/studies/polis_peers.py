"""Baselines for predicting a Polis member's vote, scored on the same held-out votes as the RM.

Rows: the agree / disagree votes (passes left out) of a conversation's held-out participants
(polis_examples.split_participants). Each peer gives every row a score for "agrees"; AUC per
conversation. Peers:
  chance                      0.5
  statement_agree_rate        the statement's agree rate among the training participants
  member_agree_rate           the member's own agree rate over their other votes
  logistic_rate_and_member    logistic regression on the two rates above (as logits), fit on the
                              training participants' votes with the same leave-one-out features
  neighbours                  collaborative filtering: the k training participants whose votes
                              on the statements both voted on agree most with the member's
                              (their other votes), mean vote of those who voted on the target
  text_similarity             new-statement mode (no one's votes on the candidate are used):
                              bag-of-words cosine of the candidate with the statements the member
                              agreed with, minus with those they disagreed with
The first five may use other participants' votes on the candidate ("existing statement" mode);
text_similarity and member_agree_rate do not ("new statement" mode).
"""
import json
import pathlib
import re
from collections.abc import Callable

import gin
import numpy as np

from consensus_jax import atomic_io, rm_metrics
from consensus_jax.data import polis, polis_examples

EXISTING_STATEMENT_PEERS = ("chance", "statement_agree_rate", "member_agree_rate",
                            "logistic_rate_and_member", "neighbours", "text_similarity")
NEW_STATEMENT_PEERS = ("chance", "member_agree_rate", "text_similarity")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _tokens(text: str) -> list[str]:
  tokens = []
  for word in re.findall(r"\w+", text.lower()):
    tokens += list(word) if _CJK.search(word) else [word]  # CJK: one token per character
  return tokens


def _bag_of_words_C(conversation: polis.Conversation) -> np.ndarray:
  """L2-normalised word counts [statements, vocabulary] of the conversation's statements."""
  vocabulary: dict[str, int] = {}
  rows = []
  for comment_id in conversation.comment_ids:
    counts: dict[int, float] = {}
    for token in _tokens(conversation.comments[int(comment_id)].text):
      index = vocabulary.setdefault(token, len(vocabulary))
      counts[index] = counts.get(index, 0.0) + 1.0
    rows.append(counts)
  bow_CV = np.zeros((len(rows), max(1, len(vocabulary))))
  for c, counts in enumerate(rows):
    for index, count in counts.items():
      bow_CV[c, index] = count
  norms = np.linalg.norm(bow_CV, axis=1, keepdims=True)
  return bow_CV / np.where(norms == 0, 1.0, norms)


def _logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(p, 1e-3, 1 - 1e-3)
  return np.log(p / (1 - p))


def _fit_logistic(features_RF: np.ndarray, labels_R: np.ndarray, l2: float = 1e-2,
                  iterations: int = 50) -> np.ndarray:
  """Newton's method for L2-regularised logistic regression; returns weights incl. bias."""
  x_RF = np.concatenate([features_RF, np.ones((len(features_RF), 1))], axis=1)
  w_F = np.zeros(x_RF.shape[1])
  for _ in range(iterations):
    p_R = 1 / (1 + np.exp(-x_RF @ w_F))
    gradient_F = x_RF.T @ (p_R - labels_R) + l2 * w_F
    hessian_FF = (x_RF * (p_R * (1 - p_R))[:, None]).T @ x_RF + l2 * np.eye(len(w_F))
    w_F -= np.linalg.solve(hessian_FF, gradient_F)
  return w_F


class VoteTable:
  """Agree (+1) / disagree (-1) / no vote (0) of a conversation's participants, passes dropped,
  restricted to candidate statements."""

  def __init__(self, conversation: polis.Conversation):
    self.conversation = conversation
    candidate_C = np.array([conversation.comments[int(c)].is_candidate
                            for c in conversation.comment_ids])
    voted_PC = conversation.seen_PC & (conversation.votes_PC != polis.PASS) & candidate_C
    self.votes_PC = np.where(voted_PC, conversation.votes_PC, 0).astype(np.float64)

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
  """For one held-out member: the mean vote on each target of the k training participants most
  similar to the member on the statements both voted on (excluding that target), weighted by
  that similarity."""
  votes_C = table.votes_PC[member]
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
  return np.where(total_T > 0, (weights_TK * votes_TK).sum(1) / np.maximum(total_T, 1e-12), 0.0)


def evaluate_conversation(conversation: polis.Conversation, heldout_fraction: float = 0.2,
                          seed: int = 0, k: int = 20) -> dict[str, float]:
  """AUC of every peer on the conversation's held-out participants' agree / disagree votes."""
  table = VoteTable(conversation)
  split = polis_examples.split_participants(conversation, heldout_fraction, seed)
  train_P = np.flatnonzero(np.isin(conversation.participant_ids, split["train"]))
  heldout_P = np.flatnonzero(np.isin(conversation.participant_ids, split["heldout"]))
  bow_CV = _bag_of_words_C(conversation)

  statement_rate_C = table.statement_rate(train_P)
  train_rows = table.votes_PC[train_P] != 0
  features_RF = np.stack([_logit(table.statement_rate(train_P, leave_out_self=True)[train_rows]),
                          _logit(table.member_rate_loo(train_P)[train_rows])], axis=1)
  logistic_F = _fit_logistic(features_RF, (table.votes_PC[train_P][train_rows] > 0).astype(float))

  scores: dict[str, list[float]] = {name: [] for name in EXISTING_STATEMENT_PEERS}
  labels: list[int] = []
  member_rate_PC = table.member_rate_loo(heldout_P)
  for row, member in enumerate(heldout_P):
    targets_T = np.flatnonzero(table.votes_PC[member] != 0)
    if len(targets_T) < 2:
      continue
    votes_T = table.votes_PC[member, targets_T]
    labels += (votes_T > 0).astype(int).tolist()
    scores["chance"] += [0.5] * len(targets_T)
    scores["statement_agree_rate"] += statement_rate_C[targets_T].tolist()
    scores["member_agree_rate"] += member_rate_PC[row, targets_T].tolist()
    x_TF = np.stack([_logit(statement_rate_C[targets_T]),
                     _logit(member_rate_PC[row, targets_T])], axis=1)
    scores["logistic_rate_and_member"] += (x_TF @ logistic_F[:2] + logistic_F[2]).tolist()
    scores["neighbours"] += neighbour_scores(table, train_P, member, targets_T, k).tolist()
    similarity_TC = bow_CV[targets_T] @ bow_CV.T
    for t, target in enumerate(targets_T):
      others_C = table.votes_PC[member].copy()
      others_C[target] = 0
      agreed, disagreed = others_C > 0, others_C < 0
      score = (similarity_TC[t, agreed].mean() if agreed.any() else 0.0) - (
          similarity_TC[t, disagreed].mean() if disagreed.any() else 0.0)
      scores["text_similarity"].append(float(score))
  result = {"heldout_participants": int(len(heldout_P)), "votes": len(labels),
            "agree_share": float(np.mean(labels)) if labels else float("nan")}
  for name, values in scores.items():
    result[f"auc_{name}"] = rm_metrics.auc(values, labels)
  return result


def evaluate_all(load: Callable[[str], polis.Conversation], names, **kwargs) -> dict[str, dict]:
  return {name: evaluate_conversation(load(name), **kwargs) for name in names}


def markdown(results: dict[str, dict]) -> str:
  peers = EXISTING_STATEMENT_PEERS
  lines = ["AUC of each peer on held-out participants' agree/disagree votes (chance 0.5). "
           "Existing-statement peers use other participants' votes on the candidate; "
           f"new-statement peers ({', '.join(NEW_STATEMENT_PEERS)}) do not.", "",
           "| conversation | votes | agree share | " + " | ".join(peers) + " |",
           "|---|---|---|" + "---|" * len(peers)]
  for name, r in results.items():
    lines.append(f"| {name} | {r['votes']} | {r['agree_share']:.2f} | " + " | ".join(
        f"{r[f'auc_{p}']:.3f}" for p in peers) + " |")
  return "\n".join(lines) + "\n"


@gin.configurable
def report(polis_dir: str = gin.REQUIRED, output_dir: str = gin.REQUIRED,
           conversations=None, heldout_fraction: float = 0.2, seed: int = 0) -> dict:
  """The eval binary's Polis-peers mode: writes polis_peers.json and .md into output_dir."""
  out = atomic_io.check_writable_dir(output_dir, "polis_peers.report.output_dir (OUTPUT_DIR)")
  root = pathlib.Path(polis_dir)
  names = list(conversations) if conversations else polis.conversation_names(root)
  results = evaluate_all(lambda name: polis.load_conversation(root / name), names,
                         heldout_fraction=heldout_fraction, seed=seed)
  atomic_io.write_text(out / "polis_peers.json", json.dumps(results, indent=2))
  atomic_io.write_text(out / "polis_peers.md", markdown(results))
  print(markdown(results))
  return results
