"""The infer binary's job: groups (JSONL) in, chosen statements and scored candidates out.

For every group: sample N candidates from the SFT policy, score every (candidate, member) pair
with the reward model, aggregate with the welfare rule, select (consensus.py, one program
compiled on the mesh `--gin.partitioning.make_mesh.*` describes; serving.py loads the models
onto it). Writes <OUTPUT_DIR>/consensus.jsonl (the statement; every candidate with its welfare
and each member's predicted agreement on the 1-7 scale) and prints a table per group.
"""
import json
from typing import Optional

import gin
import jax

from consensus_jax import atomic_io, consensus, partitioning, serving
from consensus_jax.data import groups as data_groups
from consensus_jax.data import prompts, vocab


@gin.configurable
def infer(input_path: str = gin.REQUIRED, output_dir: str = gin.REQUIRED,
          policy_dir: str = gin.REQUIRED, rm_dir: str = gin.REQUIRED,
          policy_config=gin.REQUIRED, rm_config=gin.REQUIRED, vocab_dir: str = gin.REQUIRED,
          vocab_size: int = 8000, sampler=gin.REQUIRED, rule: str = "utilitarian",
          rule_params: Optional[dict] = None, groups_per_batch: int = 4,
          rm_lengths: Optional[dict] = None, seed: int = 0, print_tables: bool = True):
  out = atomic_io.check_writable_dir(output_dir, "infer.output_dir (OUTPUT_DIR)")
  groups = data_groups.read_groups(input_path)  # Bad input fails before any model loads.
  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size)
  # Every group's prompt must fit the policy's buckets; an over-long one fails now, by name.
  serving.policy_prompt_batch(vocabulary, groups, policy_config, sampler)
  mesh = partitioning.make_mesh()
  cfg = consensus.ConsensusConfig(sampler=sampler,
                                  statement_head_ids=prompts.rm_statement_head_ids(vocabulary),
                                  rule=rule,
                                  rule_params=tuple(sorted((rule_params or {}).items())))
  lengths = rm_lengths or {"inputs": 128, "targets": 96}
  runner = serving.ConsensusRunner(
      policy_config, serving.load_params(policy_dir, policy_config, mesh)[0], rm_config,
      serving.load_reward_model(rm_dir, rm_config, mesh)[0], vocabulary, cfg,
      rm_prefix_length=lengths["inputs"], rm_candidate_length=lengths["targets"], mesh=mesh)
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
      print("  " + serving.agreement_table(result).replace("\n", "\n  "))
    print(f"\nwrote {out / 'consensus.jsonl'}")
  return results
