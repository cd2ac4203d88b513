"""Sampler tokens/s for `small`: consensus_jax vs transformers `generate`, same weights.

    python -m benchmarks.sampler [--prompts 1 --samples 16 --new_tokens 128 --repeats 3]

The same random `small` params are exported with hf_import.to_hf and loaded by
LlamaForCausalLM; both sides sample num_samples continuations of each 64-token prompt at
temperature 1 with a KV cache, and neither stops early (no EOS), so both produce exactly
prompts x samples x new_tokens tokens.
"""
import argparse
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from benchmarks import common
from consensus_jax import decoding
from consensus_jax.models import hf_import, params as params_lib


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--prompts", type=int, default=1)
  parser.add_argument("--prompt_length", type=int, default=64)
  parser.add_argument("--samples", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  load_before = common.machine_load()

  import torch
  import transformers
  torch.set_num_threads(os.cpu_count())
  config = common.model_config(args.gin_file)
  params = common.random_params(config)
  rng = np.random.RandomState(0)
  prompts = rng.randint(3, config.vocab_size, (args.prompts, args.prompt_length)).astype(np.int32)
  lengths = np.full((args.prompts,), args.prompt_length, np.int32)
  new_tokens = args.prompts * args.samples * args.new_tokens

  cfg = decoding.SamplerConfig(max_new_tokens=args.new_tokens, num_samples=args.samples,
                               temperature=1.0, eos_id=-1, prompt_buckets=(args.prompt_length,))
  sample = decoding.jit_sampler(config, cfg)
  keys = iter(jax.random.split(jax.random.key(1), 100))
  ours_s, ours_all = common.median_seconds(
      lambda: jax.block_until_ready(sample(params, prompts, lengths, next(keys))), args.repeats)

  with tempfile.TemporaryDirectory() as hf_dir:
    hf_import.to_hf(config, params, hf_dir)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
  prompt_t = torch.from_numpy(prompts.astype(np.int64))

  def generate():
    with torch.no_grad():
      out = model.generate(prompt_t, attention_mask=torch.ones_like(prompt_t), do_sample=True,
                           temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=args.samples,
                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                           use_cache=True, pad_token_id=0, eos_token_id=None)
    assert out.shape == (args.prompts * args.samples, args.prompt_length + args.new_tokens)

  torch_s, torch_all = common.median_seconds(generate, args.repeats)
  print(f"model {args.gin_file}: {params_lib.count_params(config) / 1e6:.1f}M params; "
        f"{args.prompts} prompt(s) of {args.prompt_length} tokens x {args.samples} samples x "
        f"{args.new_tokens} new tokens; {args.repeats} timed runs each; before: {load_before}; "
        f"after: {common.machine_load()}")
  for name, seconds, runs in (("consensus_jax", ours_s, ours_all), ("transformers", torch_s,
                                                                     torch_all)):
    print(f"{name:14s} {new_tokens / seconds:8.0f} new tokens/s  (median {seconds:.2f}s of "
          f"{', '.join(f'{t:.2f}' for t in runs)})")
  print(f"ratio consensus_jax / transformers: {torch_s / ours_s:.2f}x")


if __name__ == "__main__":
  main()
