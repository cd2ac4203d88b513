r"""Evaluation binary: the reward model's metrics, or one of the studies of the selection.

    python -m consensus_jax.eval --gin_file=gin_configs/runs/reward_eval.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.MODEL_DIR="'/tmp/rm'"
    python -m consensus_jax.eval --gin_file=gin_configs/runs/study_head_to_head.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.POLICY_DIR="'/tmp/sft'" \
      --gin.RM_DIR="'/tmp/rm'" --gin.DATA_DIR="'/tmp/data'" --gin.OUTPUT_DIR="'/tmp/study'"

The run gin binds `evaluate.evaluation` to what is evaluated, and imports its module:
`studies.rm_report.evaluate_reward_model` (runs/reward_eval.gin), `studies.driver.run_study`
(runs/study_*.gin: head_to_head, exclusion, welfare), `studies.polis_peers.report`,
`studies.polis_selection.report`. Every mode runs its programs on the mesh that
`--gin.partitioning.make_mesh.*` describes.
"""
from typing import Any, Callable

import gin

from consensus_jax import binary_flags


@gin.configurable
def evaluate(evaluation: Callable[[], Any] = gin.REQUIRED):
  """The binary's one entry point: runs the evaluation the run gin names."""
  return evaluation()


if __name__ == "__main__":
  binary_flags.run_gin_binary(evaluate)
