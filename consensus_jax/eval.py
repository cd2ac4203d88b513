r"""Evaluation binary: the reward model's metrics, or one of the studies of the selection.

    python -m consensus_jax.eval --gin_file=gin_configs/runs/reward_eval.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.MODEL_DIR="'/tmp/rm'"
    python -m consensus_jax.eval --gin_file=gin_configs/runs/study_head_to_head.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.POLICY_DIR="'/tmp/sft'" \
      --gin.RM_DIR="'/tmp/rm'" --gin.DATA_DIR="'/tmp/data'" --gin.OUTPUT_DIR="'/tmp/study'"

The run gin binds `evaluate.evaluation`: `evaluate_reward_model` (below) or
`studies.driver.run_study` (head_to_head, exclusion, welfare: json, markdown and PNG plots).

Reward-model mode:
Reads the latest checkpoint of MODEL_DIR (or --gin.evaluate_reward_model.checkpoint_step=N),
scores held-out synthetic rounds (next to its peers on the same rows: chance, a bag-of-words
peer fit on the training ratings, the other members' ratings, the simulator's ceiling) and
held-out Polis participants (studies/polis_rm beside studies/polis_peers), and writes
<MODEL_DIR>/eval/reward_metrics.json and reward_metrics.md, and prints the table.
"""
import json
import pathlib
from typing import Any, Callable, Optional, Sequence

import gin
from absl import logging

from consensus_jax import binary_flags
# Imported before gin parses and locks its config: polis_peers holds a configurable.
from consensus_jax.studies import polis_peers, polis_rm


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
  import itertools

  import jax

  from consensus_jax import atomic_io, checkpointing, rm_eval
  from consensus_jax.data import polis, records, vocab
  from consensus_jax.studies import rm_peers

  model_dir = pathlib.Path(model_dir)
  out_dir = atomic_io.check_writable_dir(model_dir / "eval", "MODEL_DIR's eval/")
  params, step = checkpointing.load_latest_params(model_dir, objective.abstract_params(),
                                                  checkpoint_step)
  params = jax.device_get(params)
  lengths = task_feature_lengths or {"inputs": 128, "targets": 96}
  scorer = rm_eval.Scorer(objective.config, params, vocab.get_vocabulary(vocab_dir, vocab_size),
                          rm_eval.Lengths(lengths["inputs"], lengths["targets"]))
  bag_of_words = None
  if bag_of_words_train_groups:
    bag_of_words = rm_peers.fit_bag_of_words(list(itertools.islice(
        records.iter_jsonl(pathlib.Path(data_dir) / "train.jsonl"), bag_of_words_train_groups)))
  results = {}
  for split in splits:
    rounds = list(itertools.islice(records.iter_jsonl(pathlib.Path(data_dir) / f"{split}.jsonl"),
                                   max_groups))
    for predictor, metrics in rm_eval.evaluate_rounds(scorer, rounds, bag_of_words).items():
      results[f"synthetic/{split}/{predictor}"] = metrics
  polis_model = polis_rm.PolisRewardModel(scorer=scorer, step=step, model_dir=str(model_dir))
  for name in polis_conversations if polis_dir else ():
    # Held-out participants' votes, the RM (new-statement mode) beside the peers on each vote.
    results[f"polis/{name}"] = polis_peers.evaluate_conversation(
        polis.load_conversation(pathlib.Path(polis_dir) / name), max_votes=polis_max_votes,
        extra_scorers={"reward_model": polis_model.vote_scorer("new")})
  table = "\n\n".join(rm_eval.markdown_table({k: v for k, v in results.items()
                                               if k.startswith(prefix)})
                       for prefix in ("synthetic/", "polis/"))
  if jax.process_index() == 0:
    atomic_io.write_text(out_dir / "reward_metrics.json", json.dumps(
        {"checkpoint_step": step, "results": results}, indent=2))
    atomic_io.write_text(out_dir / "reward_metrics.md", f"Checkpoint step {step}\n\n{table}\n")
  print(f"Reward model {model_dir} at step {step}\n{table}")
  logging.info("wrote %s", out_dir / "reward_metrics.json")
  return results


@gin.configurable
def evaluate(evaluation: Callable[[], Any] = gin.REQUIRED):
  """The binary's one entry point: runs the evaluation the run gin names."""
  return evaluation()


if __name__ == "__main__":
  binary_flags.run_gin_binary(evaluate)
