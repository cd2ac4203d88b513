"""End-to-end groups/s of the compiled consensus program (sample -> score -> aggregate -> select).

    python -m benchmarks.consensus_program [--gin_file gin_configs/models/small.gin --groups 4]

Random weights for the policy and the reward model (same shape), prompts of 128 tokens, member
prefixes of 96, 16 candidates x `--new_tokens` tokens each (no early EOS), 5 members per group.
There is no peer implementation of the whole program; the figure is reported with its parts
(the sampler and the scorer alone, timed in the same run).
"""
import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from benchmarks import common
from consensus_jax import cpu_runtime
from consensus_jax import consensus, decoding, partitioning, programs, serving
from consensus_jax.models import reward


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--groups", type=int, default=4)
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--candidates", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=48)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  load_before = common.machine_load()
  config = common.model_config(args.gin_file)
  policy = common.random_params(config)
  rm = common.random_params(config, reward.RewardModel, seed=1)
  rng = np.random.RandomState(0)
  b, m = args.groups, args.members
  prompts = rng.randint(3, config.vocab_size, (b, 128)).astype(np.int32)
  prompt_lengths = np.full((b,), 128, np.int32)
  prefixes = rng.randint(3, config.vocab_size, (b, m, 96)).astype(np.int32)
  prefix_lengths = np.full((b, m), 96, np.int32)
  mask = np.ones((b, m), bool)
  sampler = decoding.SamplerConfig(max_new_tokens=args.new_tokens, num_samples=args.candidates,
                                   eos_id=-1, prompt_buckets=(128,))
  cfg = consensus.ConsensusConfig(sampler=sampler, statement_head_ids=(5, 6), rule="schulze")
  mesh = partitioning.single_device_mesh()
  serving_config, policy = serving.serve_policy(config, policy, sampler, mesh)
  rm = jax.device_put(rm, programs.reward_shardings(config, mesh))
  program = programs.consensus_program(serving_config, config, cfg, mesh)
  keys = iter(jax.random.split(jax.random.key(2), 100))
  run = lambda: jax.block_until_ready(program(policy, rm, prompts, prompt_lengths, prefixes,
                                              prefix_lengths, mask, next(keys)))
  total_s, runs = common.median_seconds(run, args.repeats)
  sample = programs.sampler(serving_config, sampler, mesh)
  sample_s, _ = common.median_seconds(
      lambda: jax.block_until_ready(sample(policy, prompts, prompt_lengths, next(keys))),
      args.repeats)
  print(f"model {args.gin_file} (policy and RM); {b} groups x {args.candidates} candidates x "
        f"{m} members, {args.new_tokens} new tokens; before: {load_before}; after: "
        f"{common.machine_load()}")
  print(f"consensus program: {b / total_s:.3f} groups/s (median {total_s:.2f}s of "
        f"{', '.join(f'{t:.2f}' for t in runs)}); of which sampling alone {sample_s:.2f}s, "
        f"scoring + welfare about {total_s - sample_s:.2f}s")


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
