"""Model FLOPs of a decoder train step (and of a forward pass), and the matmul peak they are
measured against.

Per token, forward + backward costs
  6 x (matmul params)  +  12 x layers x (heads x head_dim) x seq
The first term is 2 FLOPs per multiply-add in the forward pass and twice that backward, over
every parameter used in a matmul (all of them except the input embedding, which is a gather;
norm scales are counted too, a rounding error). The second is attention's two [L, L] matmuls
(scores and values) per layer, forward and backward; heads x head_dim equals d_model in the
usual shapes. Remat recomputation is not counted: this is *model* FLOPs (the MFU convention),
not hardware FLOPs. XLA's cost analysis of a scanned model counts the layer body once, so it
cannot replace this formula.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig


def matmul_params(config: DecoderConfig) -> int:
  embedding_lookup = 0 if config.tie_embeddings else config.vocab_size * config.d_model
  return params_lib.count_params(config) - embedding_lookup


def train_flops_per_token(config: DecoderConfig, seq_len: int) -> float:
  attention = 12 * config.num_layers * config.num_heads * config.resolved_head_dim * seq_len
  return 6.0 * matmul_params(config) + attention


def forward_flops_per_token(config: DecoderConfig, context_len: int) -> float:
  """One token's forward pass attending to `context_len` positions (sampling, scoring)."""
  attention = 4 * config.num_layers * config.num_heads * config.resolved_head_dim * context_len
  return 2.0 * matmul_params(config) + attention


def measure_matmul_peak_flops(size: int = 2048, repeats: int = 3) -> float:
  """Float32 matmul FLOP/s that one jitted [size, size] matmul reaches on the default device.

  On a CPU host this is the machine's figure (the simulated devices of a test share the same
  cores), which is what MFU on a CPU should be measured against.
  """
  x = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32))
  matmul = jax.jit(lambda a: a @ a)
  matmul(x).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(x).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * size ** 3 / float(np.median(times))


# Dense bf16 matmul peaks per chip (vendor figures), keyed by a substring of device_kind.
# The first match wins: "TPU v5 lite" (v5e) before "TPU v5" (v5p's device_kind).
_ACCELERATOR_PEAK_FLOPS = (
    ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12),
    ("TPU v6", 918e12), ("TPU v4", 275e12), ("TPU v3", 123e12), ("H200", 989e12),
    ("H100", 989e12), ("A100", 312e12),
)


def known_peak_flops_per_device(device_kind: str) -> float | None:
  for name, peak in _ACCELERATOR_PEAK_FLOPS:
    if name.lower() in device_kind.lower():
      return peak
  return None
