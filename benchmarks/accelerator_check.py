"""The sampler and a train step on an accelerator, against torch on the same device.

    JAX_PLATFORMS=cuda python -m benchmarks.accelerator_check [--sections sample,train] ...

(JAX_PLATFORMS must be set: the CPU benchmarks it reuses default it to cpu.)

For a machine with a GPU (or TPU) where only jax, flax, optax, orbax, torch and transformers
are installed (gin-config travels as a wheel): seqio and tensorflow feed data and write
summaries, not the step itself, so when they are missing they are replaced by empty modules
here and never used. Prints, each section on its own so one failure does not hide the rest:
- devices and versions;
- greedy sampling with the KV cache equals the argmax of full forwards, on the device;
- reward scoring with shared prefixes equals scoring each pair alone, and its pairs/s;
- sampler new tokens/s, 16 samples x 128 new tokens of one 64-token prompt, for `small`
  (float32) against transformers `generate` with the same weights on the same device, and for
  the big model (bfloat16 compute) against `generate` in bfloat16;
- train-step tokens/s and MFU (against a bf16 matmul peak measured here) for `small` and the
  big model, with torch's step of `small` in the same run.
"""
import argparse
import importlib.abc
import importlib.machinery
import sys
import time
import traceback
import types


class _Placeholder(type):
  """Any attribute of a placeholder module: a class whose attributes and calls are
  placeholders too, so module-level uses (base classes, constants) import cleanly."""

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _Placeholder(name, (), {})

  def __call__(cls, *args, **kwargs):
    return cls


class _EmptyModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Stands in for packages a train step does not use (seqio, tensorflow) when absent."""
  ROOTS = ("seqio", "tensorflow", "tensorflow_datasets", "tensorflow_text")

  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in self.ROOTS:
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = types.ModuleType(spec.name)
    module.__path__ = []
    module.__getattr__ = lambda attr: _Placeholder(attr, (), {})
    return module

  def exec_module(self, module):
    pass


def _stub_missing_data_packages():
  import importlib.util
  missing = [r for r in _EmptyModules.ROOTS if importlib.util.find_spec(r) is None]
  if missing:
    sys.meta_path.append(_EmptyModules())
    print(f"[setup] not installed, replaced by empty modules: {', '.join(missing)}")


def _section(name, fn, *args):
  start = time.perf_counter()
  print(f"\n=== {name}", flush=True)
  try:
    fn(*args)
  except Exception:  # noqa: BLE001 - report and go on to the next section
    traceback.print_exc()
    print(f"=== {name}: FAILED", flush=True)
  print(f"=== {name}: {time.perf_counter() - start:.0f}s", flush=True)


def _devices():
  import flax
  import jax
  import torch
  import transformers
  print(f"jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}")
  print(f"jax devices: {jax.devices()}; torch cuda: {torch.cuda.is_available()}")


def _greedy_equals_full_forward():
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks import common
  from consensus_jax import decoding, partitioning, programs, serving
  from consensus_jax.models import decoder
  from consensus_jax.models.config import DecoderConfig

  config = DecoderConfig(vocab_size=64, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                         mlp_dim=96, max_seq_len=64)
  params = common.random_params(config)
  params["unembed"] = params["unembed"] * 4.0
  tokens_BP, lengths_B = decoding.pad_to_bucket([[5, 9, 13, 2, 7], [11, 3]], (8,), 64)
  cfg = decoding.SamplerConfig(max_new_tokens=8, num_samples=2, temperature=0.0, eos_id=-1,
                               cache_chunk=3)
  mesh = partitioning.single_device_mesh()
  serving_config, served = serving.serve_policy(config, params, cfg, mesh)
  out = programs.sampler(serving_config, cfg, mesh)(served, tokens_BP, lengths_B,
                                                    jax.random.key(0))
  forward = jax.jit(lambda p, t: decoder.Decoder(config).apply({"params": p}, t))
  for row in range(2):
    tokens = list(tokens_BP[row, :lengths_B[row]])
    for _ in range(8):
      tokens.append(int(jnp.argmax(forward(params, jnp.asarray([tokens]))[0, -1])))
    got = np.asarray(out.tokens_BNT[row, 0]).tolist()
    print(f"row {row}: cache {got} full {tokens[lengths_B[row]:]} "
          f"{'EQUAL' if got == tokens[lengths_B[row]:] else 'DIFFERENT'}")


def _sampler_speed(gin_file, repeats):
  import numpy as np
  import torch

  from benchmarks import common, sampler, timing

  config = common.model_config(gin_file)
  params = common.random_params(config)
  prompts = np.random.RandomState(0).randint(3, config.vocab_size, (1, 64)).astype(np.int32)
  shapes = (config, params, prompts, 16, 128)
  result = timing.compare({"consensus_jax": sampler.sampler_side(*shapes),
                           "transformers": sampler.generate_side(*shapes, device="cuda")},
                          rounds=max(1, repeats // 2))
  print(f"{gin_file} ({config.dtype}), 16 x 128 new tokens:")
  for line in timing.report(result, 16 * 128, "new tokens/s", ("consensus_jax", "transformers")):
    print("  " + line)
  torch.cuda.empty_cache()


def _rm_scoring(gin_file, repeats):
  """score_groups (shared prefixes) against scoring each concatenated pair alone, then pairs/s."""
  import jax
  import numpy as np

  from benchmarks import common
  from consensus_jax import partitioning, programs
  from consensus_jax.models import reward

  config = common.model_config(gin_file)
  params = common.random_params(config, reward.RewardModel)
  # The head starts at zero (every utility 0.5); random weights make the comparison mean something.
  params["score_kernel"] = np.random.RandomState(1).randn(config.d_model).astype(np.float32)
  params = jax.device_put(params)
  rng = np.random.RandomState(0)
  members, candidates, prefix_len, candidate_len = 5, 16, 128, 64
  prefix_lengths = rng.randint(prefix_len // 2, prefix_len + 1, (1, members)).astype(np.int32)
  candidate_lengths = rng.randint(8, candidate_len + 1, (1, candidates)).astype(np.int32)
  prefixes = rng.randint(3, config.vocab_size, (1, members, prefix_len)).astype(np.int32)
  cands = rng.randint(3, config.vocab_size, (1, candidates, candidate_len)).astype(np.int32)
  score = programs.rm_scorer(config, partitioning.single_device_mesh())
  utilities = np.asarray(score(params, prefixes, prefix_lengths, cands, candidate_lengths))
  forward = jax.jit(lambda p, t: reward.RewardModel(config).apply({"params": p}, t))
  worst = 0.0
  for n in range(0, candidates, 5):
    for m in range(members):
      sequence = np.concatenate([prefixes[0, m, :prefix_lengths[0, m]],
                                 cands[0, n, :candidate_lengths[0, n]]])
      alone = float(jax.nn.sigmoid(forward(params, sequence[None])[0, -1]))
      worst = max(worst, abs(alone - float(utilities[0, n, m])))
  seconds, runs = common.median_seconds(lambda: jax.block_until_ready(
      score(params, prefixes, prefix_lengths, cands, candidate_lengths)), repeats)
  print(f"{gin_file} ({config.dtype}): shared-prefix scores vs each pair alone: max |diff| "
        f"{worst:.2e}; {members * candidates / seconds:.0f} pairs/s "
        f"(runs {', '.join(f'{t:.4f}' for t in runs)})")


def _bf16_peak_flops(size=8192, repeats=10):
  import jax
  import jax.numpy as jnp

  from benchmarks import common
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.bfloat16)
  mm = jax.jit(lambda x: x @ x)
  seconds, _ = common.median_seconds(lambda: mm(a).block_until_ready(), repeats)
  return 2.0 * size ** 3 / seconds


def _train_speed(gin_file, batch, seq, repeats, with_torch):
  from benchmarks import common, train_step
  from consensus_jax.models import flops

  config = common.model_config(gin_file)
  peak = _bf16_peak_flops()
  step_flops = flops.train_flops_per_token(config, seq) * batch * seq
  rows = [("consensus_jax", *common.median_seconds(train_step.jax_train_step(config, batch, seq),
                                                 repeats))]
  if with_torch:
    rows.append(("torch", *common.median_seconds(
        train_step.torch_train_step(config, batch, seq, "cuda"), repeats)))
  print(f"{gin_file} ({config.dtype}), batch {batch} x {seq}; bf16 matmul peak "
        f"{peak / 1e12:.0f} TFLOP/s")
  for name, seconds, runs in rows:
    print(f"{name:14s} {batch * seq / seconds:10.0f} tokens/s  MFU "
          f"{step_flops / seconds / peak:6.1%}  (runs {', '.join(f'{t:.4f}' for t in runs)})")
  if len(rows) > 1:
    print(f"ratio: {rows[1][1] / rows[0][1]:.2f}x")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sections", default="devices,greedy,sample,rm,train")
  parser.add_argument("--small_gin", default="gin_configs/models/small.gin")
  parser.add_argument("--big_gin", default="gin_configs/models/rm_1b.gin")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  _stub_missing_data_packages()
  sections = args.sections.split(",")
  if "devices" in sections:
    _section("devices", _devices)
  if "greedy" in sections:
    _section("greedy sampling with the cache vs full forwards", _greedy_equals_full_forward)
  if "sample" in sections:
    for gin_file in (args.small_gin, args.big_gin):
      _section(f"sampler {gin_file}", _sampler_speed, gin_file, args.repeats)
  if "rm" in sections:
    for gin_file in (args.small_gin, args.big_gin):
      _section(f"reward scoring {gin_file}", _rm_scoring, gin_file, args.repeats)
  if "train" in sections:
    _section(f"train step {args.small_gin}", _train_speed, args.small_gin, 8, 256,
             args.repeats, True)
    _section(f"train step {args.big_gin}", _train_speed, args.big_gin, 8, 1024, args.repeats,
             False)


if __name__ == "__main__":
  main()
