"""Statement selection on real votes, and the Polis reward model's AUC next to its peers.

For every conversation folder: random groups of members (sizes drawn from `group_sizes`) and
candidate sets of K statements every member voted on (polis_examples.selection_groups; K = 8, or
fewer where the votes allow no such group). The RM sees each member's votes on statements
outside the candidate set only, plus, in existing-statement mode, how the conversation's other
participants (never the group's members) voted on the candidates. Each welfare rule picks one
candidate from the RM's utilities; the pick is scored by the group's real votes on it:
  mean_approval   mean over members of agree 1, pass 0.5, disagree 0
  disagree_share  share of members who disagree
Compared with random choice (the expectation over the candidates), the popularity pick (the
highest agree rate among the other participants), the collaborative-filtering peer's pick
(`neighbours`: the highest mean over members of the agree share among the 20 other participants
who vote most like each member, on statements outside the candidate set; the same share the RM
sees in existing-statement mode), the best AUC peer's pick (`logistic_shares`: the highest mean
over members of polis_peers' logistic model on the three shares the RM reads in existing-statement
mode, from votes outside the candidate set; its four weights are fit once per conversation on up
to 200 participants of the AUC split's training side, which can include group members, and carry
nothing about any one statement) and the best candidate in hindsight (by the group's own votes);
gap_closed = (method - random) / (hindsight - random), from the means over
the conversation's groups.

Letters: G groups, M members, K candidates.
"""
import json
import pathlib
from collections.abc import Sequence

import gin
import numpy as np

from consensus_jax import atomic_io, gin_utils, partitioning, reward_scoring, welfare
from consensus_jax.data import polis, polis_examples, polis_votes, prompts
from consensus_jax.studies import polis_peers, polis_rm

RULES = ("utilitarian", "rawlsian", "nash", "schulze")
APPROVAL = {polis.AGREE: 1.0, polis.PASS: 0.5, polis.DISAGREE: 0.0}


def draw_groups(conversation: polis.Conversation, num_groups: int, group_sizes: Sequence[int],
                num_candidates: int, min_candidates: int, seed: int):
  """(groups, K used, reason if none): groups of every size in turn, the largest K that
  yields groups, down to `min_candidates`."""
  for k in range(num_candidates, min_candidates - 1, -1):
    groups = []
    per_size = max(1, num_groups // len(group_sizes))
    for i, size in enumerate(group_sizes):
      groups += polis_examples.selection_groups(conversation, num_groups=per_size,
                                                num_candidates=k, group_size=size,
                                                seed=seed + i)
    if groups:
      return groups, k, None
  return [], 0, (f"no set of {min_candidates} statements that {min(group_sizes)} members all "
                 "voted on")


def _group_inputs(conversation, table, group, mode: str, seed: int):
  """Each member's prefix for every candidate [M][K] (their votes outside the candidate set,
  chosen for that candidate as in training), rendering of every candidate [M][K], and in
  existing-statement mode each member's "people like me" share of every candidate [M, K]."""
  rows_M = np.flatnonzero(np.isin(conversation.participant_ids, group.participant_ids))
  columns_K = np.array([conversation.column_of(c) for c in group.comment_ids])
  others_P = np.flatnonzero(~np.isin(conversation.participant_ids, group.participant_ids))
  texts = [conversation.comments[c].text for c in group.comment_ids]
  prefixes, candidates, similar_MK = [], [], []
  for row in rows_M:
    rng = np.random.default_rng([seed, int(row), *group.comment_ids])
    prefixes.append([polis_examples.member_prefix(conversation, table, int(row), columns_K,
                                                  column, rng)[0] for column in columns_K])
    if mode == "existing":
      summary = polis_votes.summarise(table, int(row), columns_K, others_P, hidden_C=columns_K)
      candidates.append([prompts.polis_rm_candidate(t, e, s) for t, e, s in
                         zip(texts, summary.everyone_T, summary.similar_T)])
      similar_MK.append(summary.similar_T)
    else:
      candidates.append([prompts.polis_rm_candidate(t) for t in texts])
  return prefixes, candidates, others_P, columns_K, np.array(similar_MK)


def evaluate_conversation(conversation: polis.Conversation, model: polis_rm.PolisRewardModel,
                          *, num_groups: int = 30, group_sizes: Sequence[int] = (5, 10, 20),
                          num_candidates: int = 8, min_candidates: int = 4,
                          seed: int = 0) -> dict:
  groups, k, reason = draw_groups(conversation, num_groups, group_sizes, num_candidates,
                                  min_candidates, seed)
  if not groups:
    return {"groups": 0, "skipped": reason, "methods": {}}
  table = model.table(conversation)
  train_P = np.flatnonzero(np.isin(conversation.participant_ids, polis_examples.split_participants(
      conversation, seed=seed)["train"]))
  shares_F = polis_peers.fit_share_logistic(table, train_P, seed)
  approval, disagree = {}, {}

  def record(method, approval_G, disagree_G):
    approval.setdefault(method, []).append(approval_G)
    disagree.setdefault(method, []).append(disagree_G)

  for g, group in enumerate(groups):
    approval_MK = np.vectorize(APPROVAL.get)(group.votes_MC).astype(np.float64)
    disagree_MK = (group.votes_MC == polis.DISAGREE).astype(np.float64)
    approval_K, disagree_K = approval_MK.mean(0), disagree_MK.mean(0)
    record("random", approval_K.mean(), disagree_K.mean())
    best = int(np.argmax(approval_K))
    record("hindsight", approval_K[best], disagree_K[best])
    for mode, prefix in (("new", "rm_"), ("existing", "rm_existing_")):
      prefixes, candidates, others_P, columns_K, similar_MK = _group_inputs(
          conversation, table, group, mode, seed + g)
      utilities_MK = model.score_pairs(
          [p for row in prefixes for p in row],
          [c for row in candidates for c in row]).reshape(len(prefixes), -1)
      if mode == "existing":
        pick = int(np.argmax(similar_MK.mean(0)))
        record("neighbours", approval_K[pick], disagree_K[pick])
        rows_M = np.flatnonzero(np.isin(conversation.participant_ids, group.participant_ids))
        logits_MK = np.stack([polis_peers.share_features_TF(table, int(row), columns_K, others_P,
                                                            hidden_C=columns_K)
                              for row in rows_M]) @ shares_F[:3] + shares_F[3]
        pick = int(np.argmax((1 / (1 + np.exp(-logits_MK))).mean(0)))
        record("logistic_shares", approval_K[pick], disagree_K[pick])
      utilities_1KM = utilities_MK.T[None].astype(np.float32)
      mask_1M = np.ones((1, utilities_MK.shape[0]), bool)
      for rule in RULES:
        winner = int(np.asarray(welfare.select(utilities_1KM, mask_1M, rule)[0])[0])
        record(prefix + rule, approval_K[winner], disagree_K[winner])
    popularity_K = table.statement_rate(others_P)[columns_K]
    pick = int(np.argmax(popularity_K))
    record("popularity", approval_K[pick], disagree_K[pick])
  mean = {m: float(np.mean(v)) for m, v in approval.items()}
  span = mean["hindsight"] - mean["random"]
  methods = {m: {"mean_approval": mean[m], "disagree_share": float(np.mean(disagree[m])),
                 "gap_closed": (mean[m] - mean["random"]) / span if span > 0 else float("nan")}
             for m in approval}
  return {"groups": len(groups), "candidates": k,
          "group_sizes": sorted({len(g.participant_ids) for g in groups}), "methods": methods,
          "approval_by_group": {m: [float(x) for x in v] for m, v in approval.items()}}


def overall(conversations: dict[str, dict]) -> dict[str, dict]:
  """Every group of every conversation weighted equally."""
  by_method: dict[str, list[float]] = {}
  disagree: dict[str, list[float]] = {}
  for result in conversations.values():
    for method, values in result.get("approval_by_group", {}).items():
      by_method.setdefault(method, []).extend(values)
    for method, metrics in result["methods"].items():
      disagree.setdefault(method, []).extend([metrics["disagree_share"]] * result["groups"])
  if not by_method:
    return {}
  mean = {m: float(np.mean(v)) for m, v in by_method.items()}
  span = mean["hindsight"] - mean["random"]
  return {m: {"mean_approval": mean[m], "disagree_share": float(np.mean(disagree[m])),
              "gap_closed": (mean[m] - mean["random"]) / span if span > 0 else float("nan"),
              "groups": len(by_method[m])} for m in by_method}


def _method_order(methods) -> list[str]:
  fixed = ["random", "popularity", "neighbours", "logistic_shares", "hindsight"]
  return [m for m in fixed if m in methods] + sorted(m for m in methods if m not in fixed)


def selection_markdown(result: dict) -> str:
  lines = ["Selection on real votes: mean approval of the chosen statement (agree 1, pass 0.5, "
           "disagree 0), share of members who disagree, and gap closed between random and "
           "hindsight.", ""]
  overall_ = result["overall"]
  if overall_:
    lines += ["| method | mean approval | disagree share | gap closed |", "|---|---|---|---|"]
    for m in _method_order(overall_):
      r = overall_[m]
      lines.append(f"| {m} | {r['mean_approval']:.3f} | {r['disagree_share']:.3f} | "
                   f"{r['gap_closed']:.2f} |")
  lines += ["", "| conversation | groups | K | " + " | ".join(
      f"{m} gap" for m in _method_order(overall_)) + " |",
      "|---|---|---|" + "---|" * len(_method_order(overall_))]
  for name, r in result["conversations"].items():
    if not r["groups"]:
      lines.append(f"| {name} | 0 | - | skipped: {r['skipped']} |")
      continue
    lines.append(f"| {name} | {r['groups']} | {r['candidates']} | " + " | ".join(
        f"{r['methods'][m]['gap_closed']:.2f}" for m in _method_order(overall_)) + " |")
  return "\n".join(lines) + "\n"


def auc_markdown(auc: dict[str, dict]) -> str:
  return polis_peers.markdown(
      {name: {"votes": r["votes"], "agree_share": r["agree_share"],
              **{f"auc_{k}": v for k, v in r.items() if isinstance(v, float)}}
       for name, r in auc.items()},
      first={"rm": "the Polis RM, new-statement mode (the member's other votes, the candidate's "
                   "text)",
             "rm_existing": "the same RM, existing-statement mode (also others' votes on the "
                            "candidate)"})


def _fold_models(names: Sequence[str], model_dir, fold_model_dirs, load_model):
  """conversation -> the model that scores it: one model, or per fold the one that held it out."""
  if bool(model_dir) == bool(fold_model_dirs):
    raise gin_utils.BindingError(
        "polis_selection.report: set exactly one of model_dir (MODEL_DIR) and fold_model_dirs")
  if model_dir:
    model = load_model(model_dir)
    return {name: model for name in names}
  folds = polis.folds(names, len(fold_model_dirs))
  models = [load_model(d) for d in fold_model_dirs]
  return {name: models[f] for f, fold in enumerate(folds) for name in fold}


@gin.configurable
def report(polis_dir: str = gin.REQUIRED, output_dir: str = gin.REQUIRED, objective=gin.REQUIRED,
           vocab_dir: str = gin.REQUIRED, vocab_size: int = 8000, model_dir: str | None = None,
           fold_model_dirs: Sequence[str] = (), conversations: Sequence[str] | None = None,
           num_groups: int = 30, group_sizes: Sequence[int] = (5, 10, 20),
           num_candidates: int = 8, max_auc_votes: int | None = 1500,
           task_feature_lengths: dict | None = None, seed: int = 0) -> dict:
  """The eval binary's Polis selection mode: writes polis_auc.json / .md and
  polis_selection.json / .md into output_dir.

  fold_model_dirs: RMs trained with HELDOUT_FOLD = 0, 1, ... over the same folder: each
  conversation is scored by the one that never trained on it (leave-conversations-out).
  """
  out = atomic_io.check_writable_dir(output_dir, "polis_selection.report.output_dir (OUTPUT_DIR)")
  names = polis.existing_conversation_names(polis_dir,
                                            "polis_selection.report.polis_dir (POLIS_DIR)")
  if conversations:
    unknown = sorted(set(conversations) - set(names))
    if unknown:
      raise gin_utils.BindingError(f"polis_selection.report.conversations: {unknown} not in "
                                   f"{polis_dir}")
    names = list(conversations)
  lengths = task_feature_lengths or {"inputs": 160, "targets": 64}
  mesh = partitioning.make_mesh()
  models = _fold_models(names, model_dir, fold_model_dirs, lambda d: polis_rm.load(
      d, objective, vocab_dir, vocab_size,
      reward_scoring.Lengths(lengths["inputs"], lengths["targets"]), mesh=mesh))
  auc, selection = {}, {}
  for name in names:
    conversation = polis.load_conversation(pathlib.Path(polis_dir) / name)
    model = models[name]
    peers = polis_peers.evaluate_conversation(
        conversation, seed=seed, max_votes=max_auc_votes,
        extra_scorers={"rm": model.vote_scorer("new"),
                       "rm_existing": model.vote_scorer("existing")})
    auc[name] = {key[len("auc_"):]: value for key, value in peers.items()
                 if key.startswith("auc_")}
    auc[name].update(votes=peers["votes"], agree_share=peers["agree_share"],
                     model_dir=model.model_dir, checkpoint_step=model.step)
    selection[name] = evaluate_conversation(
        conversation, model, num_groups=num_groups, group_sizes=group_sizes,
        num_candidates=num_candidates, seed=seed)
    print(f"{name}: AUC rm {auc[name]['rm']:.3f}, rm_existing {auc[name]['rm_existing']:.3f}, "
          f"neighbours {auc[name]['neighbours']:.3f}; {selection[name]['groups']} groups")
  result = {"conversations": selection, "overall": overall(selection)}
  atomic_io.write_text(out / "polis_selection.json", json.dumps(result, indent=2))
  atomic_io.write_text(out / "polis_selection.md", selection_markdown(result))
  atomic_io.write_text(out / "polis_auc.json", json.dumps(auc, indent=2))
  auc_table = auc_markdown(auc)
  atomic_io.write_text(out / "polis_auc.md", auc_table)
  print(auc_table)
  print(selection_markdown(result))
  return result
