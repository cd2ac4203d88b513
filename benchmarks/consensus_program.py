"""Whole-pipeline groups/s: the compiled consensus program vs the obvious Hugging Face pipeline.

    python -m benchmarks.consensus_program [--groups 4 --candidates 16 --members 5]

Both sides do the same work for a batch of groups: sample `--candidates` statements of
`--new_tokens` tokens from each group's 128-token prompt (temperature 1, no early EOS), score
every (candidate, member) pair with a reward model of the same shape as the policy after the
member's 96-token prefix, aggregate each group's utilities with a welfare rule (Schulze) and
pick a winner.

- consensus_jax: `programs.consensus_program`, one compiled program (the sampler's shared prompt
  cache; the RM runs each member's prefix once and scores all candidates against its cache).
- transformers, as its user would write it: `LlamaForCausalLM.generate` with
  `num_return_sequences` for all groups' prompts at once (the same policy weights, exported with
  hf_import.to_hf), then `LlamaForSequenceClassification` (num_labels=1, the RM's backbone
  exported the same way, its score head set to the RM's) on every (prefix + statement head +
  candidate + EOS) sequence in batches of `--hf_score_batch`, then numpy welfare per group
  (benchmarks.welfare's reference implementation). torch with every core, inference_mode.

Timed by benchmarks/timing (warm-up until runs agree, alternating rounds, min / median / spread,
ratio flagged when unsteady). Where the time goes: the transformers side records its three
phases in every run; ours is split by timing the sampler program and the RM scorer program
alone in the same rounds (welfare and the glue between them are the rest).

With --matmul_floor the rounds also time the pipeline's weight matmuls alone
(benchmarks.forward_matmuls: the sampler's prefill and decode steps, the RM's pass over every
member prefix and every (candidate, member) token): the speed no pipeline doing this work
reaches here with these dots.
"""
import argparse
import collections
import os
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from benchmarks import common, forward_matmuls, timing
from benchmarks import welfare as welfare_bench
from consensus_jax import cpu_runtime
from consensus_jax import consensus, decoding, partitioning, programs, serving
from consensus_jax.models import hf_import, params as params_lib, reward

PROMPT, PREFIX = 128, 96
HEAD_IDS = (5, 6)  # A two-token statement head, as "Statement:" is.
RULE = "schulze"


def make_inputs(config, groups, members, seed=0):
  rng = np.random.RandomState(seed)
  return {"prompts": rng.randint(3, config.vocab_size, (groups, PROMPT)).astype(np.int32),
          "prompt_lengths": np.full((groups,), PROMPT, np.int32),
          "prefixes": rng.randint(3, config.vocab_size, (groups, members, PREFIX)).astype(
              np.int32),
          "prefix_lengths": np.full((groups, members), PREFIX, np.int32),
          "mask": np.ones((groups, members), bool)}


def ours_sides(config, policy_host, rm_host, inputs, candidates, new_tokens):
  """The whole program, and its sampler and RM scorer alone, each as a run-to-completion fn."""
  sampler_cfg = decoding.SamplerConfig(max_new_tokens=new_tokens, num_samples=candidates,
                                       eos_id=-1, prompt_buckets=(PROMPT,))
  cfg = consensus.ConsensusConfig(sampler=sampler_cfg, statement_head_ids=HEAD_IDS, rule=RULE)
  mesh = partitioning.single_device_mesh()
  serving_config, policy = serving.serve_policy(config, policy_host, sampler_cfg, mesh)
  rm = jax.device_put(rm_host, programs.reward_shardings(config, mesh))
  program = programs.consensus_program(serving_config, config, cfg, mesh)
  sample = programs.sampler(serving_config, sampler_cfg, mesh)
  score = programs.rm_scorer(config, mesh)
  keys = iter(jax.random.split(jax.random.key(2), 1000))
  x = inputs
  groups = x["prompts"].shape[0]
  candidate_length = len(HEAD_IDS) + new_tokens + 1
  cand_tokens = np.random.RandomState(1).randint(
      3, config.vocab_size, (groups, candidates, candidate_length)).astype(np.int32)
  cand_lengths = np.full((groups, candidates), candidate_length, np.int32)
  return {
      "consensus_jax": lambda: jax.block_until_ready(program(
          policy, rm, x["prompts"], x["prompt_lengths"], x["prefixes"], x["prefix_lengths"],
          x["mask"], next(keys))),
      "ours: sampling": lambda: jax.block_until_ready(sample(
          policy, x["prompts"], x["prompt_lengths"], next(keys))),
      "ours: scoring": lambda: jax.block_until_ready(score(
          rm, x["prefixes"], x["prefix_lengths"], cand_tokens, cand_lengths)),
  }


def matmul_floor_side(config, groups, members, candidates, new_tokens):
  """The pipeline's weight matmuls alone (see the module doc): (a run-to-completion fn,
  FLOPs). The policy in the serving layout (fused kernels), the RM in the trained one."""
  candidate_length = len(HEAD_IDS) + new_tokens + 1
  scored_rows = groups * members * (PREFIX + candidates * candidate_length)
  return forward_matmuls.floor(
      config, forward_matmuls.Passes(groups * PROMPT, fused=True),
      forward_matmuls.Passes(groups * candidates, new_tokens, fused=True),
      forward_matmuls.Passes(scored_rows, logits=False))


def transformers_side(config, policy_host, rm_host, inputs, candidates, new_tokens, score_batch,
                      phases):
  """The transformers pipeline as one run-to-completion fn; appends each run's phase times to
  `phases` (sampling, scoring, welfare)."""
  import torch
  import transformers

  transformers.logging.set_verbosity_error()  # Its load report lists the head it does not load.
  with tempfile.TemporaryDirectory() as hf_dir:
    hf_import.to_hf(config, policy_host, hf_dir)
    policy = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  with tempfile.TemporaryDirectory() as hf_dir:
    # The RM's backbone has no unembedding; the classifier ignores the one written here.
    hf_import.to_hf(config, {**rm_host["backbone"], "unembed": np.zeros(
        (config.d_model, config.vocab_size), np.float32)}, hf_dir)
    rm = transformers.LlamaForSequenceClassification.from_pretrained(
        hf_dir, dtype=torch.float32, num_labels=1, pad_token_id=0).eval()
  with torch.no_grad():
    rm.score.weight.copy_(torch.from_numpy(np.asarray(rm_host["score_kernel"])[None]))
  score_bias = float(rm_host["score_bias"])  # The classifier's head has none.
  prompts = torch.from_numpy(inputs["prompts"].astype(np.int64))
  prefixes = torch.from_numpy(inputs["prefixes"].astype(np.int64))
  mask = inputs["mask"]
  groups, members, _ = prefixes.shape
  head = torch.tensor(HEAD_IDS, dtype=torch.int64)
  eos = torch.tensor([1], dtype=torch.int64)

  def run():
    start = time.perf_counter()
    with torch.inference_mode():
      out = policy.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                            temperature=1.0, top_k=0, top_p=1.0,
                            num_return_sequences=candidates, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, use_cache=True, pad_token_id=0,
                            eos_token_id=None)
      statements = out[:, PROMPT:].reshape(groups, candidates, new_tokens)
      sampled = time.perf_counter()
      # Every (group, candidate, member): prefix + statement head + candidate + EOS.
      sequences = torch.cat([
          prefixes[:, None].expand(groups, candidates, members, PREFIX),
          head.expand(groups, candidates, members, len(HEAD_IDS)),
          statements[:, :, None].expand(groups, candidates, members, new_tokens),
          eos.expand(groups, candidates, members, 1)], dim=-1).reshape(
              groups * candidates * members, -1)
      scores = torch.cat([rm(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
                          for batch in sequences.split(score_batch)])
      utilities = 1 / (1 + np.exp(-(scores.reshape(groups, candidates, members).numpy()
                                     + score_bias)))
    scored = time.perf_counter()
    winners, _ = welfare_bench.numpy_select(utilities, mask, RULE, {})
    assert winners.shape == (groups,)
    done = time.perf_counter()
    phases.append({"sampling": sampled - start, "scoring": scored - sampled,
                   "welfare": done - scored})

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--groups", type=int, default=4)
  parser.add_argument("--members", type=int, default=5)
  parser.add_argument("--candidates", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=48)
  parser.add_argument("--hf_score_batch", type=int, default=80,
                      help="(candidate, member) sequences per RM forward on the transformers "
                      "side (80: one group's 16 x 5).")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=1, help="Timed runs per side per round.")
  parser.add_argument("--matmul_floor", action="store_true",
                      help="Also time the pipeline's weight matmuls alone in the same rounds.")
  args = parser.parse_args()
  load_before = common.machine_load()
  import torch
  torch.set_num_threads(os.cpu_count())

  config = common.model_config(args.gin_file)
  policy = common.random_params(config)
  rm = common.random_params(config, reward.RewardModel, seed=1)
  rm["score_kernel"] = np.random.RandomState(1).normal(0, 0.02, config.d_model).astype(
      np.float32)  # Initialised to zeros: every utility would tie.
  inputs = make_inputs(config, args.groups, args.members)
  shapes = (config, policy, inputs, args.candidates, args.new_tokens)
  phases = []
  sides = {**ours_sides(config, policy, rm, *shapes[2:]),
           "transformers": transformers_side(config, policy, rm, *shapes[2:],
                                             args.hf_score_batch, phases)}
  if args.matmul_floor:
    sides["weight matmuls alone"], floor_flops = matmul_floor_side(
        config, args.groups, args.members, args.candidates, args.new_tokens)
  result = timing.compare(sides, rounds=args.rounds, repeats=args.repeats)
  g = args.groups
  print(f"model {args.gin_file} ({params_lib.count_params(config) / 1e6:.1f}M params) as policy "
        f"and RM; {g} groups x {args.candidates} candidates x {args.members} members, "
        f"{args.new_tokens} new tokens, prompts {PROMPT}, member prefixes {PREFIX}, rule {RULE}; "
        f"{args.rounds} alternating rounds of {args.repeats} runs; before: {load_before}; "
        f"after: {common.machine_load()}")
  whole = {name: result[name] for name in ("consensus_jax", "transformers")}
  for line in timing.report(whole, g, "groups/s", ("consensus_jax", "transformers")):
    print(line)
  total = result["consensus_jax"].median
  parts = {name.split(": ")[1]: result[name].median for name in result if ": " in name}
  if args.matmul_floor:
    floor, peer = result["weight matmuls alone"], result["transformers"]
    floor_gflop = floor_flops / 1e9
    print(f"the pipeline's weight matmuls alone ({floor_gflop:.0f} GFLOP): min {floor.min:.2f}s, "
          f"median {floor.median:.2f}s, spread {floor.spread:.0%}, "
          f"{floor_gflop / floor.median:.0f} GFLOP/s; a pipeline that did nothing else would be "
          f"{peer.median / floor.median:.2f}x the transformers pipeline's median "
          f"({peer.min / floor.min:.2f}x of minimums), the most this work reaches here; they are "
          f"{floor.median / total:.0%} of our median run")
  parts["welfare + glue (the rest)"] = max(total - sum(parts.values()), 0.0)
  print("consensus_jax, where the time goes (medians of the parts timed alone): " + ", ".join(
      f"{name} {s:.2f}s ({s / total:.0%})" for name, s in parts.items()))
  kept = phases[-len(result["transformers"].seconds):]  # The timed runs, not the warm-up.
  hf_total = result["transformers"].median
  per_phase = collections.OrderedDict(
      (name, statistics.median(p[name] for p in kept)) for name in kept[0])
  print("transformers, where the time goes (medians of its timed runs): " + ", ".join(
      f"{name} {s:.2f}s ({s / hf_total:.0%})" for name, s in per_phase.items()))
  for name in ("sampling", "scoring"):
    print(f"{name}: consensus_jax {parts[name]:.2f}s vs transformers {per_phase[name]:.2f}s "
          f"({per_phase[name] / parts[name]:.2f}x)")


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
