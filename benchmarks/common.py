"""Shared benchmark helpers: repeated timings, the machine's f32 matmul peak and memory bandwidth,
model configs and random params, and the train benchmarks' shared main (timed by
benchmarks/timing)."""
import os
import statistics
import time

import numpy as np

from benchmarks import timing


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


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5,
                         threads: int | None = None) -> float:
  """This machine's memory bandwidth in GB/s by a STREAM-style triad, a = b + s * c on float32
  arrays far larger than the caches, counted as STREAM counts it (two arrays read, one written:
  12 bytes per element). Every core takes a slice; each slice is done in blocks that fit the
  L2 cache, so numpy's two passes (a = s * c, then a += b) cost the memory one pass. Best of
  `repeats`."""
  import concurrent.futures

  threads = threads or os.cpu_count()
  n = megabytes * 2 ** 20 // 4
  rng = np.random.RandomState(0)
  b, c = rng.rand(n).astype(np.float32), rng.rand(n).astype(np.float32)
  a = np.empty_like(b)
  block = 32 * 1024  # 128 KB a block per array.
  bounds = np.linspace(0, n, threads + 1).astype(int)

  def triad(lo, hi):
    for start in range(lo, hi, block):
      stop = min(start + block, hi)
      np.multiply(c[start:stop], np.float32(3.0), out=a[start:stop])
      np.add(a[start:stop], b[start:stop], out=a[start:stop])

  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    def run():
      list(pool.map(triad, bounds[:-1], bounds[1:]))
    run()  # First touch of `a`.
    best = min(median_seconds(run, 1, warmup=0)[0] for _ in range(repeats))
  np.testing.assert_allclose(a[:1000], b[:1000] + 3.0 * c[:1000], rtol=1e-6)
  return 3 * 4 * n / best / 1e9


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


def torch_llama(config, model_class_name: str = "LlamaForCausalLM", seed: int = 0, **overrides):
  """A randomly initialised transformers Llama of the same shape (via hf_import.config_to_hf)."""
  import torch
  import transformers

  from consensus_jax.models import hf_import

  torch.manual_seed(seed)
  hf_config = transformers.LlamaConfig(**{**hf_import.config_to_hf(config), **overrides})
  return getattr(transformers, model_class_name)(hf_config)


def train_benchmark_main(doc: str, module: str, label: str, make_ours, make_peer) -> None:
  """The shared main of the train benchmarks (`module`, whose docstring is `doc`).

  `make_ours(config, batch, seq)` and `make_peer(config, batch, seq)` build one step each and
  return a function that runs it to completion. Rounds alternate between the two, so a machine
  whose speed drifts over minutes skews both alike (benchmarks/timing: each side warmed up until
  two runs agree, min / median / spread, ratio flagged when unsteady). Ours runs here, with
  cpu_runtime's malloc settings; the torch peer runs in a child process (this module with
  --peer_only, warmed up there the same way) with glibc's defaults, since those settings are
  consensus_jax's choice, not torch's.
  """
  import argparse
  import subprocess
  import sys

  import torch

  from consensus_jax import cpu_runtime
  from consensus_jax.models import flops as flops_lib
  from consensus_jax.models import params as params_lib

  parser = argparse.ArgumentParser(description=doc.splitlines()[0])
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=3, help="Timed runs per side per round.")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--matmul_floor", action="store_true",
                      help="Also time the step's matmuls alone (benchmarks.step_matmuls) in the "
                           "same rounds: the speed no step of this shape can pass here.")
  parser.add_argument("--peer_only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  config = model_config(args.gin_file)
  if args.peer_only:
    run_peer = make_peer(config, args.batch, args.seq)
    timing.warm_up(run_peer)  # in every child: each starts cold
    _, times = median_seconds(run_peer, args.repeats, warmup=0)
    print("PEER_SECONDS", *times)
    return

  load_before = machine_load()
  peak = matmul_peak_gflops()
  tokens = args.batch * args.seq
  step_flops = flops_lib.train_flops_per_token(config, args.seq) * tokens
  peer_command = [sys.executable, "-m", module, "--peer_only", f"--gin_file={args.gin_file}",
                  f"--batch={args.batch}", f"--seq={args.seq}", f"--repeats={args.repeats}",
                  f"--threads={args.threads}"]
  run_ours = make_ours(config, args.batch, args.seq)

  @timing.child_timed
  def run_peer():
    child = subprocess.run(peer_command, env=cpu_runtime.environ_before_restart(),
                           capture_output=True, text=True, check=True)
    return [float(t) for t in child.stdout.split("PEER_SECONDS")[-1].split()]

  sides = {"consensus_jax": run_ours, "torch": run_peer}
  if args.matmul_floor:
    from benchmarks import step_matmuls
    sides["matmuls alone"] = step_matmuls.program(config, args.batch, args.seq)
    sides["torch matmuls"] = step_matmuls.torch_program(config, args.batch, args.seq,
                                                        args.threads)
  result = timing.compare(sides, rounds=args.rounds, repeats=args.repeats)
  print(f"model {args.gin_file}: {params_lib.count_params(config) / 1e6:.1f}M params, batch "
        f"{args.batch} x seq {args.seq}, {label}; {args.rounds} alternating rounds of "
        f"{args.repeats} timed runs each; before: {load_before}; after: {machine_load()}")
  print(f"consensus_jax {allocator()}; torch in a child process, malloc: glibc defaults")
  print(f"f32 matmul peak: jax {peak['jax']:.0f} GFLOP/s, torch {peak['torch']:.0f} GFLOP/s; "
        f"{step_flops / 1e9:.1f} model GFLOP per step")
  for line in timing.report(result, tokens, f"tokens/s ({label})", ("consensus_jax", "torch")):
    print(line)
  if args.matmul_floor:
    from benchmarks import step_matmuls
    floor, torch_side = result["matmuls alone"], result["torch"]
    matmul_flops = step_matmuls.matmul_flops(config, args.batch, args.seq)
    print(f"the step's matmuls alone: {matmul_flops / 1e9:.1f} GFLOP at "
          f"{matmul_flops / floor.median / 1e9:.0f} GFLOP/s (median); a step that did nothing "
          f"else would be {torch_side.median / floor.median:.2f}x torch's median step "
          f"({torch_side.min / floor.min:.2f}x of minimums), the most any step of this shape "
          f"reaches here; the matmuls are {floor.median / result['consensus_jax'].median:.0%} "
          f"of our median step")
    torch_floor = result["torch matmuls"]
    print(f"the same matmuls in torch: {torch_floor.median:.3f} s (median), ours "
          f"{torch_floor.median / floor.median:.2f}x its speed (of minimums "
          f"{torch_floor.min / floor.min:.2f}x); torch's step spends "
          f"{torch_side.median - torch_floor.median:.3f} s beyond its matmuls, ours "
          f"{result['consensus_jax'].median - floor.median:.3f} s")
  for name, timings in result.items():
    if name in ("matmuls alone", "torch matmuls"):
      continue
    print(f"{name:14s} MFU {step_flops / timings.median / 1e9 / max(peak.values()):.1%} of the "
          f"measured peak (median step)")
