"""precompile: TPU programs compiled on this host (libtpu's topology description) with their
per-chip memory, and a clear non-zero exit for a program that does not fit; the flash-attention
kernel against the softmax one (Pallas TPU interpret mode)."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu (the tpu extra) is not installed")


def _precompile(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "consensus_jax.precompile", *args], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


_LAST_LINE = re.compile(r"^(\S+): ([\d.]+) GiB of ([\d.]+) GiB per chip, (fits|does not fit), "
                        r"per-device batch ([\d.]+), sequence (\d+), ([\d.e+]+) model TFLOP per "
                        r"step", re.M)


@needs_libtpu
def test_tiny_train_step_compiles_for_a_tpu_topology_and_reports_memory():
  done = _precompile("--gin_file=gin_configs/runs/sft.gin",
                     "--gin_file=gin_configs/models/tiny.gin",
                     "--gin_file=gin_configs/mesh/v5p_8.gin", "--gin.precompile.name='tiny_sft'",
                     "--gin.DecoderConfig.attention_kind='flash'",
                     "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 128}",
                     "--gin.precompile.step_seconds=0.01")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "4 chips, TPU v5" in done.stdout
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in done.stdout
  for label in ("arguments", "temporaries", "total", "HBM per chip"):
    assert re.search(rf"  {label}\s+[\d.]+ GiB", done.stdout), label
  assert "MFU" in done.stdout
  name, total, hbm, verdict, batch, sequence, tflop = _LAST_LINE.findall(done.stdout)[-1]
  assert (name, verdict, float(batch), int(sequence)) == ("tiny_sft", "fits", 2.0, 256)
  assert 0 < float(total) < 1 and float(hbm) == 95.74
  # 8 sequences of 256 tokens x (6 x 1.78M matmul params + attention 12 x 4 x 128 x 256).
  assert float(tflop) == pytest.approx(8 * 256 * (6 * 1.78e6 + 12 * 4 * 128 * 256) / 1e12,
                                       rel=0.02)


@needs_libtpu
def test_consensus_program_compiles_and_an_oversized_one_does_not_fit():
  common = ["--gin_file=gin_configs/runs/infer.gin", "--gin_file=gin_configs/models/tiny.gin",
            "--gin_file=gin_configs/mesh/v5p_8.gin", "--gin.NUM_CANDIDATES=4",
            "--gin.MAX_NEW_TOKENS=16", "--gin.DecoderConfig.max_seq_len=512"]
  done = _precompile(*common, "--gin.precompile.name='tiny_consensus'")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "sampler (prefill + decode): per chip" in done.stdout
  assert "consensus program (sample, score, select): per chip" in done.stdout
  verdicts = [m[3] for m in _LAST_LINE.findall(done.stdout)]
  assert verdicts == ["fits", "fits"]

  # The same program with a 0.001 GiB HBM: reported as not fitting, with a non-zero exit.
  done = _precompile(*common, "--gin.precompile.name='too_big'", "--gin.precompile.hbm_gib=0.001",
                     "--gin.precompile.serving_programs=('sampler',)")
  assert done.returncode != 0
  assert re.search(r"^too_big: [\d.]+ GiB of 0.001 GiB per chip, does not fit", done.stdout, re.M)
  assert "DoesNotFitError" in done.stderr and "more than the 0.001 GiB of v5p:2x2x1" in done.stderr


@needs_libtpu
def test_a_gin_without_a_run_and_an_unknown_topology_are_named():
  done = _precompile("--gin_file=gin_configs/mesh/v5p_8.gin")
  assert done.returncode != 0
  assert "bind neither train.* " in done.stderr
  done = _precompile("--gin_file=gin_configs/runs/sft.gin",
                     "--gin_file=gin_configs/models/tiny.gin",
                     "--gin_file=gin_configs/mesh/v5p_8.gin", "--gin.precompile.topology='v9:2x2'")
  assert done.returncode != 0
  assert "precompile.topology: libtpu does not know 'v9:2x2'" in done.stderr


_FLASH_CHECK = r"""
import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from jax.experimental.pallas import tpu as pltpu
from consensus_jax.models import decoder
from consensus_jax.models.config import DecoderConfig
cfg = DecoderConfig(vocab_size=64, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                    mlp_dim=96, max_seq_len=256)
rng = np.random.default_rng(0)
tokens = jnp.asarray(rng.integers(1, 64, (2, 128)), jnp.int32)
segments = np.ones((2, 128), np.int32); segments[0, 70:] = 2; segments[1, 100:] = 0
positions = np.stack([np.r_[np.arange(70), np.arange(58)], np.arange(128)])
params = nn.meta.unbox(decoder.Decoder(cfg).init(jax.random.key(0), tokens[:, :8])["params"])
real = jnp.asarray(segments)[..., None] > 0
def loss(config, p):
  logits = decoder.Decoder(config).apply({"params": p}, tokens, jnp.asarray(positions),
                                         jnp.asarray(segments))
  return jnp.sum(jnp.where(real, logits, 0.0) ** 2) * 1e-3, logits
step = lambda config: jax.jit(jax.value_and_grad(lambda p: loss(config, p), has_aux=True))
with pltpu.force_tpu_interpret_mode():
  (_, flash_logits), flash_grads = step(cfg.replace(attention_kind="flash"))(params)
(_, logits), grads = step(cfg)(params)
mask = segments > 0
print("logits", float(np.abs(np.asarray(flash_logits)[mask] - np.asarray(logits)[mask]).max()))
print("grads", max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
    jax.tree_util.tree_leaves(flash_grads), jax.tree_util.tree_leaves(grads))))
print("scale", float(np.abs(np.asarray(logits)[mask]).max()))
"""


def test_flash_attention_equals_softmax_attention():
  """The Pallas TPU kernel (interpret mode, one CPU device: the interpreter does not run across
  simulated devices) against softmax_attention on packed segments and padding, values and
  gradients. Sharded, it is checked by compiling for a TPU mesh (first test)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace("device_count=8", "device_count=1"))
  done = subprocess.run([sys.executable, "-c", _FLASH_CHECK], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  values = dict(line.split() for line in done.stdout.splitlines() if line.split()[0] in (
      "logits", "grads", "scale"))
  assert float(values["scale"]) > 0.1  # the comparison is not of zeros
  assert float(values["logits"]) < 1e-4
  assert float(values["grads"]) < 1e-4
