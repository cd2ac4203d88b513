r"""Consensus inference binary: groups (JSONL) in, chosen statements and scored candidates out.

    python -m consensus_jax.infer --gin_file=gin_configs/runs/infer.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.POLICY_DIR="'/tmp/sft'" \
      --gin.RM_DIR="'/tmp/rm'" --gin.INPUT_PATH="'groups.jsonl'" --gin.OUTPUT_DIR="'/tmp/out'"

For every group: sample N candidates from the SFT policy, score every (candidate, member) pair
with the reward model, aggregate with the welfare rule, select (consensus.py, one compiled
program). Writes <OUTPUT_DIR>/consensus.jsonl (the statement; every candidate with its welfare
and each member's predicted agreement on the 1-7 scale) and prints a table per group.
"""
import json
import pathlib
from typing import Any, Optional

import gin

from consensus_jax import atomic_io, binary_flags


def _latest_params(model_dir: str, abstract_params: Any):
  import jax

  from consensus_jax import checkpointing

  return jax.device_get(checkpointing.load_latest_params(model_dir, abstract_params)[0])


@gin.configurable
def infer(input_path: str = gin.REQUIRED, output_dir: str = gin.REQUIRED,
          policy_dir: str = gin.REQUIRED, rm_dir: str = gin.REQUIRED,
          policy_config=gin.REQUIRED, rm_config=gin.REQUIRED, vocab_dir: str = gin.REQUIRED,
          vocab_size: int = 8000, sampler=gin.REQUIRED, rule: str = "utilitarian",
          rule_params: Optional[dict] = None, groups_per_batch: int = 4,
          rm_lengths: Optional[dict] = None, seed: int = 0, print_tables: bool = True):
  import jax

  from consensus_jax import consensus, inference
  from consensus_jax.data import prompts, vocab
  from consensus_jax.models import params as params_lib
  from consensus_jax.models import reward

  out = atomic_io.check_writable_dir(output_dir, "infer.output_dir (OUTPUT_DIR)")
  groups = inference.read_groups(input_path)  # Bad input fails before any model loads.
  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size)
  # Every group's prompt must fit the policy's buckets; an over-long one fails now, by name.
  inference.policy_prompt_batch(vocabulary, groups, policy_config, sampler)
  cfg = consensus.ConsensusConfig(sampler=sampler,
                                  statement_head_ids=prompts.rm_statement_head_ids(vocabulary),
                                  rule=rule,
                                  rule_params=tuple(sorted((rule_params or {}).items())))
  lengths = rm_lengths or {"inputs": 128, "targets": 96}
  runner = inference.ConsensusRunner(
      policy_config, _latest_params(policy_dir, params_lib.abstract_params(policy_config)),
      rm_config, _latest_params(rm_dir, params_lib.abstract_params(rm_config,
                                                                   reward.RewardModel)),
      vocabulary, cfg, rm_prefix_length=lengths["inputs"],
      rm_candidate_length=lengths["targets"])
  results = []
  rng = jax.random.key(seed)
  for start in range(0, len(groups), groups_per_batch):
    rng, batch_rng = jax.random.split(rng)
    results += runner.run(groups[start:start + groups_per_batch], batch_rng)
  with atomic_io.open_atomic(out / "consensus.jsonl") as f:
    for result in results:
      f.write(json.dumps(result, ensure_ascii=False) + "\n")
  if print_tables:
    for result in results:
      print(f"\n=== group {result['id']}: {result['question']}")
      for pid, opinion in result["opinions"].items():
        print(f"  {pid}: {opinion}")
      print(f"  CONSENSUS ({rule}): {result['statement']}")
      print("  predicted agreement (1-7) of each member, best candidates by welfare:")
      print("  " + inference.agreement_table(result).replace("\n", "\n  "))
    print(f"\nwrote {out / 'consensus.jsonl'}")
  return results


if __name__ == "__main__":
  binary_flags.run_gin_binary(infer)
