"""Sampler tokens/s for `small`: consensus_jax vs transformers `generate`, same weights.

    python -m benchmarks.sampler [--prompts 1 --samples 16 --new_tokens 128 --repeats 3]

The same random `small` params are exported with hf_import.to_hf and loaded by
LlamaForCausalLM (`generate_side`; benchmarks.accelerator_check runs it on a GPU); both sides
sample num_samples continuations of each 64-token prompt at temperature 1 with a KV cache, and
neither stops early (no EOS), so both produce exactly prompts x samples x new_tokens tokens.
The sides are timed by benchmarks/timing (warm-up until runs agree, alternating rounds, min /
median / spread, ratio flagged when unsteady); torch runs with every core and inference_mode.

The memory-bandwidth bound: the script measures this machine's bandwidth (a STREAM-style triad,
benchmarks.common.memory_bandwidth_gbs) and counts the bytes a run must read from memory: the
weights once for the prefill and once per decode step (the embedding table only for the rows
looked up, unless tied to the output), the prompt cache every step, and every step the sample
cache chunks that step reads. bytes / bandwidth is the fastest the run could be (bandwidth: the
higher of two triads, before and after the timing, as it drifts too); the fraction of that
bound each side reaches is printed beside the ratio.

With --matmul_floor the rounds also time the run's weight matmuls alone (benchmarks.
forward_matmuls: the prefill's, then every decode step's at prompts x samples rows): the speed
no sampler of this shape reaches here with these dots. The line after it adds the time the KV
caches take to read at the measured bandwidth: within a layer a decode step does one after the
other.
"""
import argparse
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from benchmarks import common, forward_matmuls, timing
from consensus_jax import cpu_runtime
from consensus_jax import decoding, partitioning, programs, serving
from consensus_jax.models import hf_import, params as params_lib


def sampler_side(config, host_params, prompts, samples, new_tokens):
  """One run of the sampler program (programs.sampler) on one device, to completion; params
  resident there in the serving layout (converted once, as serving does at load)."""
  lengths = np.full((prompts.shape[0],), prompts.shape[1], np.int32)
  cfg = decoding.SamplerConfig(max_new_tokens=new_tokens, num_samples=samples, temperature=1.0,
                               eos_id=-1, prompt_buckets=(prompts.shape[1],))
  mesh = partitioning.single_device_mesh()
  serving_config, params = serving.serve_policy(config, host_params, cfg, mesh)
  sample = programs.sampler(serving_config, cfg, mesh)
  keys = iter(jax.random.split(jax.random.key(1), 1000))
  return lambda: jax.block_until_ready(sample(params, prompts, lengths, next(keys)))


def matmul_floor_side(config, prompts, samples, new_tokens):
  """The run's weight matmuls alone (see the module doc): (a run-to-completion fn, FLOPs)."""
  return forward_matmuls.floor(
      config, forward_matmuls.Passes(prompts.size, fused=True),
      forward_matmuls.Passes(prompts.shape[0] * samples, new_tokens, fused=True))


def bytes_read(config, host_params, prompts, samples, new_tokens,
               cache_chunk: int | None = None) -> dict[str, float]:
  """Bytes one sampler run must read from memory, by what is read (see the module doc)."""
  cache_chunk = decoding.SamplerConfig.cache_chunk if cache_chunk is None else cache_chunk
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(host_params))
  table = host_params["embedding"]
  rows = prompts.shape[0] * samples
  if not config.tie_embeddings:  # A step reads only the rows it looks up.
    param_bytes -= table.size * table.dtype.itemsize - rows * table.shape[1] * table.dtype.itemsize
  item = np.dtype(config.compute_dtype).itemsize
  per_slot = 2 * config.num_layers * config.num_kv_heads * config.resolved_head_dim * item
  prompt_cache = prompts.shape[0] * prompts.shape[1] * per_slot
  chunk = cache_chunk or new_tokens
  sample_cache = sum(min(new_tokens, (step // chunk + 1) * chunk) * rows * per_slot
                     for step in range(new_tokens))
  return {"weights": param_bytes * (new_tokens + 1), "prompt cache": prompt_cache * new_tokens,
          "sample cache": sample_cache}


def generate_side(config, host_params, prompts, samples, new_tokens, device="cpu"):
  """One run of transformers `generate` on the same weights (exported with hf_import.to_hf), in
  the config's compute dtype, on a torch device."""
  import torch
  import transformers

  dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
  with tempfile.TemporaryDirectory() as hf_dir:
    hf_import.to_hf(config, host_params, hf_dir)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
  prompt_t = torch.from_numpy(prompts.astype(np.int64)).to(device)

  def generate():
    with torch.inference_mode():
      out = model.generate(prompt_t, attention_mask=torch.ones_like(prompt_t), do_sample=True,
                           temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=samples,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           use_cache=True, pad_token_id=0, eos_token_id=None)
    assert tuple(out.shape) == (prompts.shape[0] * samples, prompts.shape[1] + new_tokens)
    if prompt_t.is_cuda:  # CUDA runs ahead of Python: time each run to its completion.
      torch.cuda.synchronize()

  return generate


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--prompts", type=int, default=1)
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--samples", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=2, help="Timed runs per side per round.")
  parser.add_argument("--matmul_floor", action="store_true",
                      help="Also time the run's weight matmuls alone in the same rounds.")
  args = parser.parse_args()
  load_before = common.machine_load()

  import torch
  torch.set_num_threads(os.cpu_count())
  config = common.model_config(args.gin_file)
  params = common.random_params(config)
  prompts = np.random.RandomState(0).randint(3, config.vocab_size, (
      args.prompts, args.prompt_length)).astype(np.int32)
  shapes = (config, params, prompts, args.samples, args.new_tokens)
  bandwidth_before = common.memory_bandwidth_gbs()
  sides = {"consensus_jax": sampler_side(*shapes), "transformers": generate_side(*shapes)}
  if args.matmul_floor:
    sides["weight matmuls alone"], floor_flops = matmul_floor_side(
        config, prompts, args.samples, args.new_tokens)
  result = timing.compare(sides, rounds=args.rounds, repeats=args.repeats)
  generated = args.prompts * args.samples * args.new_tokens
  # The machine's bandwidth drifts too: measured on both sides of the timing, the higher (the
  # stricter bound) is used.
  bandwidths = (bandwidth_before, common.memory_bandwidth_gbs())
  bandwidth = max(bandwidths)
  must_read = bytes_read(*shapes)
  bound_s = sum(must_read.values()) / bandwidth / 1e9
  print(f"model {args.gin_file}: {params_lib.count_params(config) / 1e6:.1f}M params; "
        f"{args.prompts} prompt(s) of {args.prompt_length} tokens x {args.samples} samples x "
        f"{args.new_tokens} new tokens; {args.rounds} alternating rounds of {args.repeats} runs; "
        f"before: {load_before}; after: {common.machine_load()}")
  for line in timing.report(result, generated, "new tokens/s", ("consensus_jax", "transformers")):
    print(line)
  print(f"memory bandwidth (triad, before and after the timing): {bandwidths[0]:.1f} and "
        f"{bandwidths[1]:.1f} GB/s, the higher used; a run must read "
        + ", ".join(f"{name} {b / 1e9:.2f} GB" for name, b in must_read.items())
        + f": bound {bound_s:.3f} s ({args.new_tokens} steps, "
        f"{bound_s / args.new_tokens * 1e3:.1f} ms a step)")
  if args.matmul_floor:
    floor, peer = result["weight matmuls alone"], result["transformers"]
    rows, gflop = args.prompts * args.samples, floor_flops / 1e9
    print(f"the run's weight matmuls alone (prefill, then {args.new_tokens} steps at {rows} "
          f"rows): min {floor.min:.3f}s, median {floor.median:.3f}s, spread {floor.spread:.0%}; "
          f"{floor.median / args.new_tokens * 1e3:.1f} ms a step (the prefill spread over the "
          f"steps), {gflop / floor.median:.0f} GFLOP/s; a run that did nothing else would be "
          f"{peer.median / floor.median:.2f}x generate's median ({peer.min / floor.min:.2f}x of "
          f"minimums), the most any sampler of this shape reaches here; they are "
          f"{floor.median / result['consensus_jax'].median:.0%} of our median run")
    # In a decode step the attention needs its layer's q/k/v projections and the output
    # projection needs the attention: cache reads and weight matmuls run one after the other,
    # and the reads take at least bytes / bandwidth.
    cache_s = (must_read["prompt cache"] + must_read["sample cache"]) / bandwidth / 1e9
    print(f"with the caches read at the full bandwidth on top ({cache_s:.3f} s): "
          f"{peer.median / (floor.median + cache_s):.2f}x generate's median "
          f"({peer.min / (floor.min + cache_s):.2f}x of minimums), before any sampling, "
          f"softmax or norm")
  for name, t in result.items():
    if name == "weight matmuls alone":
      continue
    print(f"{name:14s} {bound_s / t.median:.0%} of the bandwidth bound (median run; "
          f"{t.median / args.new_tokens * 1e3:.1f} ms a step), {bound_s / t.min:.0%} (fastest)")


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
