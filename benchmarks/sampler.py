"""Sampler tokens/s for `small`: consensus_jax vs transformers `generate`, same weights.

    python -m benchmarks.sampler [--prompts 1 --samples 16 --new_tokens 128 --repeats 3]

The same random `small` params are exported with hf_import.to_hf and loaded by
LlamaForCausalLM (`time_generate`; benchmarks.accelerator_check runs it on a GPU); both sides
sample num_samples continuations of each 64-token prompt at temperature 1 with a KV cache, and
neither stops early (no EOS), so both produce exactly prompts x samples x new_tokens tokens.
"""
import argparse
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

from benchmarks import common
from consensus_jax import cpu_runtime
from consensus_jax import decoding
from consensus_jax.models import hf_import, params as params_lib


def time_sampler(config, host_params, prompts, samples, new_tokens, repeats):
  """Median seconds (and all runs) of decoding.jit_sampler, params resident on the device."""
  params = jax.device_put(host_params)
  lengths = np.full((prompts.shape[0],), prompts.shape[1], np.int32)
  cfg = decoding.SamplerConfig(max_new_tokens=new_tokens, num_samples=samples, temperature=1.0,
                               eos_id=-1, prompt_buckets=(prompts.shape[1],))
  sample = decoding.jit_sampler(config, cfg)
  keys = iter(jax.random.split(jax.random.key(1), 100))
  return common.median_seconds(
      lambda: jax.block_until_ready(sample(params, prompts, lengths, next(keys))), repeats)


def time_generate(config, host_params, prompts, samples, new_tokens, repeats, device="cpu"):
  """Median seconds (and all runs) of transformers `generate` on the same weights (exported
  with hf_import.to_hf), in the config's compute dtype, on a torch device."""
  import torch
  import transformers

  dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
  with tempfile.TemporaryDirectory() as hf_dir:
    hf_import.to_hf(config, host_params, hf_dir)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
  prompt_t = torch.from_numpy(prompts.astype(np.int64)).to(device)

  def generate():
    with torch.no_grad():
      out = model.generate(prompt_t, attention_mask=torch.ones_like(prompt_t), do_sample=True,
                           temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=samples,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           use_cache=True, pad_token_id=0, eos_token_id=None)
    assert tuple(out.shape) == (prompts.shape[0] * samples, prompts.shape[1] + new_tokens)
    if prompt_t.is_cuda:  # CUDA runs ahead of Python: time each run to its completion.
      torch.cuda.synchronize()

  return common.median_seconds(generate, repeats)


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
  torch.set_num_threads(os.cpu_count())
  config = common.model_config(args.gin_file)
  params = common.random_params(config)
  prompts = np.random.RandomState(0).randint(3, config.vocab_size, (
      args.prompts, args.prompt_length)).astype(np.int32)
  timing = (config, params, prompts, args.samples, args.new_tokens, args.repeats)
  ours_s, ours_all = time_sampler(*timing)
  torch_s, torch_all = time_generate(*timing)
  generated = args.prompts * args.samples * args.new_tokens
  print(f"model {args.gin_file}: {params_lib.count_params(config) / 1e6:.1f}M params; "
        f"{args.prompts} prompt(s) of {args.prompt_length} tokens x {args.samples} samples x "
        f"{args.new_tokens} new tokens; {args.repeats} timed runs each; before: {load_before}; "
        f"after: {common.machine_load()}")
  for name, seconds, runs in (("consensus_jax", ours_s, ours_all), ("transformers", torch_s,
                                                                     torch_all)):
    print(f"{name:14s} {generated / seconds:8.0f} new tokens/s  (median {seconds:.2f}s of "
          f"{', '.join(f'{t:.2f}' for t in runs)})")
  print(f"ratio consensus_jax / transformers: {torch_s / ours_s:.2f}x")


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
