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
  logistic_shares             logistic regression on the three shares the RM reads in
                              existing-statement mode, unrounded (the statement's agree rate,
                              the neighbours' agree share, the member's own agree rate; as
                              logits), fit on up to `share_fit_members` training participants
                              with each one's shares from the other training participants
  text_similarity             new-statement mode (no one's votes on the candidate are used):
                              bag-of-words cosine of the candidate with the statements the member
                              agreed with, minus with those they disagreed with (means over all)
  text_nearest                the same over only the `nearest` (5) most similar statements the
                              member agreed with and the 5 they disagreed with: the votes that
                              speak to the candidate, not the average of all
  logistic_shares_text        logistic regression on logistic_shares' three inputs plus the two
                              text scores, fit like logistic_shares: what the RM's
                              existing-statement inputs, numbers and words, give a linear model
  logistic_member_text        new-statement mode: logistic regression on the member's own agree
                              rate and the two text scores, fit likewise
The share and rate peers, neighbours and logistic_shares_text may use other participants' votes
on the candidate ("existing statement" mode); NEW_STATEMENT_PEERS do not.
"""
import json
import pathlib
from collections.abc import Callable

import gin
import numpy as np

from consensus_jax import atomic_io, rm_metrics
from consensus_jax.data import polis, polis_examples
from consensus_jax.data.polis_votes import VoteTable, neighbour_scores, summarise

EXISTING_STATEMENT_PEERS = ("chance", "statement_agree_rate", "member_agree_rate",
                            "logistic_rate_and_member", "neighbours", "logistic_shares",
                            "text_similarity", "text_nearest", "logistic_shares_text",
                            "logistic_member_text")
NEW_STATEMENT_PEERS = ("chance", "member_agree_rate", "text_similarity", "text_nearest",
                       "logistic_member_text")
# Columns of member_features_TF: share_features_TF's three, then text_features_TF's two.
SHARE_COLUMNS, MEMBER_TEXT_COLUMNS, ALL_COLUMNS = (0, 1, 2), (2, 3, 4), (0, 1, 2, 3, 4)


def _mean(values: np.ndarray) -> float:
  return float(values.mean()) if len(values) else 0.0


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


def share_features_TF(table: VoteTable, member: int, targets_T: np.ndarray,
                      others_P: np.ndarray, k: int = 20,
                      hidden_C: np.ndarray | None = None) -> np.ndarray:
  """[targets, 3] logits of the shares the RM reads in existing-statement mode: the statement's
  agree rate among `others_P`, the agree share of the k of them who vote most like the member,
  the member's own agree rate (without their vote on that target, and without any vote on the
  `hidden_C` columns, a selection's candidates)."""
  summary = summarise(table, member, targets_T, others_P[others_P != member], k=k,
                      hidden_C=hidden_C)
  if hidden_C is None:
    member_rate_T = table.member_rate_loo(np.array([member]))[0, targets_T]
  else:
    votes_C = table.votes_PC[member].copy()
    votes_C[np.asarray(hidden_C, np.int64)] = 0
    member_rate_T = np.full(len(targets_T),
                            ((votes_C > 0).sum() + 1) / ((votes_C != 0).sum() + 2))
  return np.stack([_logit(np.clip(x, 0.02, 0.98)) for x in
                   (summary.everyone_T, summary.similar_T, member_rate_T)], axis=1)


def text_features_TF(table: VoteTable, member: int, targets_T: np.ndarray,
                     nearest: int = 5) -> np.ndarray:
  """[targets, 2]: text_nearest's and text_similarity's scores of each target for row `member`,
  from their agree / disagree votes on the other statements."""
  out_TF = np.zeros((len(targets_T), 2))
  for t, target in enumerate(targets_T):
    others_C = table.votes_PC[member].copy()
    others_C[target] = 0
    similarity_C = table.similarity_CC[target]
    agreed_A = np.sort(similarity_C[others_C > 0])[::-1]
    disagreed_D = np.sort(similarity_C[others_C < 0])[::-1]
    out_TF[t] = (_mean(agreed_A[:nearest]) - _mean(disagreed_D[:nearest]),
                 _mean(agreed_A) - _mean(disagreed_D))
  return out_TF


def member_features_TF(table: VoteTable, member: int, targets_T: np.ndarray,
                       others_P: np.ndarray, k: int = 20, nearest: int = 5) -> np.ndarray:
  """[targets, 5]: share_features_TF then text_features_TF (ALL_COLUMNS)."""
  return np.concatenate([share_features_TF(table, member, targets_T, others_P, k),
                         text_features_TF(table, member, targets_T, nearest)], axis=1)


def _fit_rows(table: VoteTable, train_P: np.ndarray, seed: int, k: int, max_members: int,
              with_text: bool, nearest: int = 5) -> tuple[np.ndarray, np.ndarray]:
  """Features (share_features_TF, or member_features_TF `with_text`) and agree labels of the
  votes of up to `max_members` of `train_P` (a seeded draw), each member's shares from the
  other rows."""
  fit_P = [p for p in np.random.default_rng([seed, 2]).permutation(train_P)
           if (table.votes_PC[p] != 0).any()][:max_members]
  fit_targets = [np.flatnonzero(table.votes_PC[p] != 0) for p in fit_P]
  rows = [member_features_TF(table, p, t, train_P, k, nearest) if with_text
          else share_features_TF(table, p, t, train_P, k) for p, t in zip(fit_P, fit_targets)]
  labels_R = np.concatenate([table.votes_PC[p, t] > 0 for p, t in zip(fit_P, fit_targets)]
                            or [np.zeros(0)]).astype(float)
  return np.concatenate(rows or [np.zeros((0, 5 if with_text else 3))]), labels_R


def fit_share_logistic(table: VoteTable, train_P: np.ndarray, seed: int = 0, k: int = 20,
                       max_members: int = 200) -> np.ndarray:
  """logistic_shares' weights (three, then the bias), fit on the votes of up to `max_members`
  of `train_P` (a seeded draw), each member's shares taken from the other rows of `train_P`."""
  return _fit_logistic(*_fit_rows(table, train_P, seed, k, max_members, with_text=False))


# (conversation, member row, target columns, training participant ids) -> a score per target.
MemberScorer = Callable[[polis.Conversation, int, np.ndarray, np.ndarray], np.ndarray]


def evaluate_conversation(conversation: polis.Conversation, heldout_fraction: float = 0.2,
                          seed: int = 0, k: int = 20, max_votes: int | None = None,
                          extra_scorers: dict[str, MemberScorer] | None = None,
                          share_fit_members: int = 200, nearest: int = 5) -> dict[str, float]:
  """AUC of every peer on the conversation's held-out participants' agree / disagree votes.

  max_votes: keep held-out members, in a seeded random order, until this many votes are in.
  extra_scorers: more predictors (the reward model) scored on exactly the same votes, as
    auc_<name>.
  nearest: how many of the most similar agreed and disagreed statements text_nearest averages.
  """
  table = VoteTable(conversation)
  split = polis_examples.split_participants(conversation, heldout_fraction, seed)
  train_P = np.flatnonzero(np.isin(conversation.participant_ids, split["train"]))
  heldout_P = np.flatnonzero(np.isin(conversation.participant_ids, split["heldout"]))
  if max_votes is not None:
    order = np.random.default_rng(seed).permutation(heldout_P)
    cumulative = np.cumsum((table.votes_PC[order] != 0).sum(1))
    heldout_P = np.sort(order[:int(np.searchsorted(cumulative, max_votes)) + 1])
  extra_scorers = extra_scorers or {}

  statement_rate_C = table.statement_rate(train_P)
  train_rows = table.votes_PC[train_P] != 0
  features_RF = np.stack([_logit(table.statement_rate(train_P, leave_out_self=True)[train_rows]),
                          _logit(table.member_rate_loo(train_P)[train_rows])], axis=1)
  logistic_F = _fit_logistic(features_RF, (table.votes_PC[train_P][train_rows] > 0).astype(float))
  rows_RF, labels_R = _fit_rows(table, train_P, seed, k, share_fit_members, with_text=True,
                                nearest=nearest)
  shares_F, shares_text_F, member_text_F = (
      _fit_logistic(rows_RF[:, list(columns)], labels_R)
      for columns in (SHARE_COLUMNS, ALL_COLUMNS, MEMBER_TEXT_COLUMNS))

  scores: dict[str, list[float]] = {name: [] for name in
                                    (*EXISTING_STATEMENT_PEERS, *extra_scorers)}
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
    x_TF = member_features_TF(table, member, targets_T, train_P, k, nearest)
    for name, weights_F, columns in (("logistic_shares", shares_F, SHARE_COLUMNS),
                                     ("logistic_shares_text", shares_text_F, ALL_COLUMNS),
                                     ("logistic_member_text", member_text_F,
                                      MEMBER_TEXT_COLUMNS)):
      scores[name] += (x_TF[:, list(columns)] @ weights_F[:-1] + weights_F[-1]).tolist()
    scores["text_nearest"] += x_TF[:, 3].tolist()
    scores["text_similarity"] += x_TF[:, 4].tolist()
    for name, scorer in extra_scorers.items():
      scores[name] += list(np.asarray(scorer(conversation, int(member), targets_T,
                                             split["train"]), np.float64))
  result = {"heldout_participants": int(len(heldout_P)), "votes": len(labels),
            "agree_share": float(np.mean(labels)) if labels else float("nan")}
  for name, values in scores.items():
    result[f"auc_{name}"] = rm_metrics.auc(values, labels)
  return result


def evaluate_all(load: Callable[[str], polis.Conversation], names, **kwargs) -> dict[str, dict]:
  return {name: evaluate_conversation(load(name), **kwargs) for name in names}


def markdown(results: dict[str, dict], first: dict[str, str] | None = None) -> str:
  """The AUC table: `results[conversation]` holds votes, agree_share and auc_<predictor>;
  `first` = {predictor: what it is}, columns before the peers (the reward model)."""
  first = first or {}
  columns = (*first, *EXISTING_STATEMENT_PEERS)
  lines = ["AUC on held-out participants' agree/disagree votes (chance 0.5), every predictor on "
           "the same votes. " + "".join(f"{name}: {what}. " for name, what in first.items()) +
           "Existing-statement peers use other participants' votes on the candidate; "
           f"new-statement peers ({', '.join(NEW_STATEMENT_PEERS)}) do not.", "",
           "| conversation | votes | agree share | " + " | ".join(columns) + " |",
           "|---|---|---|" + "---|" * len(columns)]
  for name, r in results.items():
    lines.append(f"| {name} | {r['votes']} | {r['agree_share']:.2f} | " + " | ".join(
        f"{r[f'auc_{c}']:.3f}" for c in columns) + " |")
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
