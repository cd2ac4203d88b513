"""Shared benchmark helpers: medians of repeated timings and the machine's f32 matmul peak."""
import os
import statistics
import time

import numpy as np


def median_seconds(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
  """Float32 matmul GFLOP/s as JAX and torch each reach it here; the max is the peak."""
  import jax
  import jax.numpy as jnp
  import torch

  a = jnp.asarray(np.random.RandomState(0).randn(size, size).astype(np.float32))
  mm = jax.jit(lambda x: x @ x)
  jax_s, _ = median_seconds(lambda: mm(a).block_until_ready(), repeats)
  t = torch.from_numpy(np.asarray(a))
  torch_s, _ = median_seconds(lambda: t @ t, repeats)
  flops = 2.0 * size ** 3
  return {"jax": flops / jax_s / 1e9, "torch": flops / torch_s / 1e9}


def machine_load() -> str:
  load1, _, _ = os.getloadavg()
  busy = load1 > 0.5
  return f"load average {load1:.2f}{' (machine was busy: figures may be skewed)' if busy else ''}"


def allocator() -> str:
  """Whether this process runs with consensus_jax.cpu_runtime's malloc settings."""
  from consensus_jax import cpu_runtime

  tuned = cpu_runtime.MALLOC_TUNABLES in os.environ.get("GLIBC_TUNABLES", "")
  return "malloc: cpu_runtime settings" if tuned else "malloc: glibc defaults"


def model_config(gin_file: str):
  """The DecoderConfig a model gin binds."""
  import gin

  from consensus_jax.models import config as config_lib

  gin.parse_config_file(gin_file)
  return config_lib.DecoderConfig()


def random_params(config, model_cls=None, seed: int = 0):
  """Random params of `model_cls` (default: the Decoder) on one device, as host arrays."""
  import jax

  from consensus_jax import partitioning
  from consensus_jax.models import decoder
  from consensus_jax.models import params as params_lib

  mesh = partitioning.make_mesh(data=1, devices=jax.devices()[:1])
  return jax.device_get(params_lib.init_params(config, mesh, jax.random.key(seed),
                                               model_cls or decoder.Decoder))


def print_train_rows(label: str, rows, tokens: int, step_flops: float,
                     peak_gflops: float) -> None:
  """tokens/s and MFU of each (name, median seconds, all runs), then the first-to-second ratio."""
  for name, seconds, runs in rows:
    mfu = step_flops / seconds / 1e9 / peak_gflops
    print(f"{name:14s} {label} {tokens / seconds:8.0f} tokens/s  MFU {mfu:6.1%}  "
          f"(median {seconds:.3f}s of {', '.join(f'{t:.3f}' for t in runs)})")
  (ours, ours_s, _), (peer, peer_s, _) = rows[:2]
  print(f"ratio {ours} / {peer} tokens/s: {peer_s / ours_s:.2f}x")


def torch_llama(config, model_class_name: str = "LlamaForCausalLM", seed: int = 0, **overrides):
  """A randomly initialised transformers Llama of the same shape (via hf_import.config_to_hf)."""
  import torch
  import transformers

  from consensus_jax.models import hf_import

  torch.manual_seed(seed)
  hf_config = transformers.LlamaConfig(**{**hf_import.config_to_hf(config), **overrides})
  return getattr(transformers, model_class_name)(hf_config)


def train_benchmark_setup(description: str):
  """The shared start of the train benchmarks: args, model config, tokens per step, load before
  timing, and the measured matmul peak."""
  import argparse

  import torch

  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  load_before = machine_load()
  return args, model_config(args.gin_file), args.batch * args.seq, load_before, (
      matmul_peak_gflops())
