"""Reward-model scoring throughput: 16 candidates x 5 members on `small`, vs transformers.

    python -m benchmarks.rm_scoring [--groups 1 --repeats 3]

consensus_jax: reward.score_groups, one jitted call that scores the 80 (candidate, member)
pairs (member prefix of 128 tokens + candidate of 64): each of the 5 prefixes runs through the
backbone once and its 16 candidates against its cached keys and values, and each score is read
at the candidate's last token. transformers: LlamaForSequenceClassification (num_labels=1, same
backbone shape) on the same 80 right-padded 192-token sequences with an attention mask, one
batched forward (it has no shared-prefix path; the same pairs, the same scores).
"""
import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from benchmarks import common, timing
from consensus_jax import cpu_runtime
from consensus_jax import partitioning, programs
from consensus_jax.models import reward


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--groups", type=int, default=1)
  parser.add_argument("--candidates", type=int, default=16)
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--prefix", type=int, default=128)
  parser.add_argument("--candidate_length", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=2, help="Timed runs per side per round.")
  args = parser.parse_args()
  load_before = common.machine_load()
  import torch
  torch.set_num_threads(os.cpu_count())

  config = common.model_config(args.gin_file)
  params = common.random_params(config, reward.RewardModel)
  rng = np.random.RandomState(0)
  b, n, m = args.groups, args.candidates, args.members
  prefixes = rng.randint(3, config.vocab_size, (b, m, args.prefix)).astype(np.int32)
  cands = rng.randint(3, config.vocab_size, (b, n, args.candidate_length)).astype(np.int32)
  prefix_lengths = np.full((b, m), args.prefix, np.int32)
  cand_lengths = np.full((b, n), args.candidate_length, np.int32)
  score = programs.rm_scorer(config, partitioning.single_device_mesh())
  pairs = b * n * m
  ours = lambda: jax.block_until_ready(score(params, prefixes, prefix_lengths, cands,
                                             cand_lengths))

  model = common.torch_llama(config, "LlamaForSequenceClassification", num_labels=1,
                             pad_token_id=0).eval()
  sequences = np.concatenate([np.repeat(prefixes[:, None], n, axis=1),
                              np.repeat(cands[:, :, None], m, axis=2)], axis=-1)
  tokens = torch.from_numpy(sequences.reshape(pairs, -1).astype(np.int64))
  mask = torch.ones_like(tokens)

  def torch_score():
    with torch.inference_mode():
      out = model(input_ids=tokens, attention_mask=mask).logits
    assert out.shape == (pairs, 1)

  result = timing.compare({"consensus_jax": ours, "transformers": torch_score},
                          rounds=args.rounds, repeats=args.repeats)
  print(f"model {args.gin_file}; {b} group(s) x {n} candidates x {m} members = {pairs} pairs of "
        f"{args.prefix + args.candidate_length} tokens; {args.rounds} alternating rounds of "
        f"{args.repeats} runs; before: {load_before}; after: {common.machine_load()}")
  for line in timing.report(result, pairs, "pairs/s", ("consensus_jax", "transformers")):
    print(line)


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
