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
