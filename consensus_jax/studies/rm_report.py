"""The reward model measured on held-out data next to its peers on the same rows: the eval
binary's reward-model mode (`evaluate_reward_model`, bound by runs/reward_eval.gin).

Synthetic rounds: MAE on the 1-7 scale (prediction 1 + 6 x utility), Pearson and Spearman over
all (candidate, member) ratings, pairwise accuracy within each member (pairs of candidates the
member rated differently) and how far the predictions tell members apart, for the RM and, on
exactly the same rows, its reference predictors (studies.rm_peers: chance, a bag-of-words ridge
peer, the other members' ratings, the simulator's noise-free ceiling). Held-out Polis
participants: studies/polis_rm beside studies/polis_peers.

Reads the latest checkpoint of MODEL_DIR (or --gin.evaluate_reward_model.checkpoint_step=N)
onto the mesh (`--gin.partitioning.make_mesh.*`), writes <MODEL_DIR>/eval/reward_metrics.json
and reward_metrics.md, and prints the table.
"""
import itertools
import json
import pathlib
from typing import Optional, Sequence

import gin
import jax
from absl import logging

from consensus_jax import atomic_io, partitioning, reward_scoring, serving
from consensus_jax.data import polis, records, vocab
from consensus_jax.studies import polis_peers, polis_rm, rating_rows, rm_peers


def evaluate_rounds(scorer: reward_scoring.Scorer, rounds: Sequence[records.Round],
                    bag_of_words: Optional[rm_peers.BagOfWordsPeer] = None,
                    groups_per_batch: int = 4) -> dict[str, dict[str, float]]:
  """The RM and its reference predictors on exactly the same rated rows.

  Returns {predictor: metrics}: "reward_model", "chance", "bag_of_words" (when given),
  "other_members", "simulator_ceiling" and "opinion_reader" (synthetic rounds), and "ratings"
  (the true ratings' own member spread, the scale member_spread compares against).
  """
  rows = rating_rows.collect(rounds)
  predicted_R = rating_rows.from_group_arrays(rows, reward_scoring.predict_rounds(scorer, rounds,
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


@gin.configurable
def evaluate_reward_model(model_dir: str = gin.REQUIRED, objective=gin.REQUIRED,
                          data_dir: str = gin.REQUIRED, vocab_dir: str = gin.REQUIRED,
                          vocab_size: int = 8000,
                          splits: Sequence[str] = ("iid_test", "ood_test"),
                          max_groups: Optional[int] = 200, polis_dir: Optional[str] = None,
                          polis_conversations: Sequence[str] = (
                              "canadian-electoral-reform", "scoop-hivemind.freshwater"),
                          polis_max_votes: Optional[int] = 2000,
                          task_feature_lengths: Optional[dict] = None,
                          checkpoint_step: Optional[int] = None,
                          bag_of_words_train_groups: int = 1000) -> dict:
  """bag_of_words_train_groups: training rounds the bag-of-words peer is fit on (0: no peer)."""
  model_dir = pathlib.Path(model_dir)
  out_dir = atomic_io.check_writable_dir(model_dir / "eval", "MODEL_DIR's eval/")
  mesh = partitioning.make_mesh()
  params, step = serving.load_reward_model(model_dir, objective.config, mesh, checkpoint_step)
  lengths = task_feature_lengths or {"inputs": 128, "targets": 96}
  scorer = reward_scoring.Scorer(objective.config, params,
                                 vocab.get_vocabulary(vocab_dir, vocab_size),
                                 reward_scoring.Lengths(lengths["inputs"], lengths["targets"]),
                                 mesh=mesh)
  bag_of_words = None
  if bag_of_words_train_groups:
    bag_of_words = rm_peers.fit_bag_of_words(list(itertools.islice(
        records.iter_jsonl(pathlib.Path(data_dir) / "train.jsonl"), bag_of_words_train_groups)))
  results = {}
  for split in splits:
    rounds = list(itertools.islice(records.iter_jsonl(pathlib.Path(data_dir) / f"{split}.jsonl"),
                                   max_groups))
    for predictor, metrics in evaluate_rounds(scorer, rounds, bag_of_words).items():
      results[f"synthetic/{split}/{predictor}"] = metrics
  polis_model = polis_rm.PolisRewardModel(scorer=scorer, step=step, model_dir=str(model_dir))
  for name in polis_conversations if polis_dir else ():
    # Held-out participants' votes, the RM (new-statement mode) beside the peers on each vote.
    results[f"polis/{name}"] = polis_peers.evaluate_conversation(
        polis.load_conversation(pathlib.Path(polis_dir) / name), max_votes=polis_max_votes,
        extra_scorers={"reward_model": polis_model.vote_scorer("new")})
  table = "\n\n".join(markdown_table({k: v for k, v in results.items()
                                               if k.startswith(prefix)})
                       for prefix in ("synthetic/", "polis/"))
  if jax.process_index() == 0:
    atomic_io.write_text(out_dir / "reward_metrics.json", json.dumps(
        {"checkpoint_step": step, "results": results}, indent=2))
    atomic_io.write_text(out_dir / "reward_metrics.md", f"Checkpoint step {step}\n\n{table}\n")
  print(f"Reward model {model_dir} at step {step}\n{table}")
  logging.info("wrote %s", out_dir / "reward_metrics.json")
  return results
