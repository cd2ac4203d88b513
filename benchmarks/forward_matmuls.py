"""A decoder's forward weight matmuls alone, as one compiled program: the floor that a sampler or a
scorer of that shape cannot go under with these dots, however well the rest is fused.

`program(config, rows, steps)` runs `steps` forward passes over `rows` token positions, each one
through every layer's projections (query, key, value, attention out, MLP in and out) and, with
`logits`, the output projection to the vocabulary. A decode step is such a pass at rows =
sequences being sampled; scoring is one pass at rows = every token scored. The passes chain
(each layer's input is the last one's output, RMS-normalised as the model does), so XLA can
neither hoist a step out of the loop nor drop a product; what is left out is attention over the
keys, the cache writes, rotary, the sampling and the score head: what the real program adds on
top of this floor. Compiled with the programs' own compiler options (Eigen dots on CPU).
benchmarks.step_matmuls is the train step's counterpart (forward and backward).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_matmuls
from consensus_jax import programs
from consensus_jax.models.config import DecoderConfig


def forward_flops(config: DecoderConfig, rows: int, steps: int = 1, logits: bool = True) -> float:
  """FLOPs of `program` (2 per multiply-add)."""
  return steps * sum(2.0 * rows * p.inputs * p.outputs * p.count
                     for p in step_matmuls.projections(config)
                     if logits or p.name != "logits")


def _weights(config: DecoderConfig, logits: bool, fused: bool, seed: int):
  d, hd = config.d_model, config.resolved_head_dim
  rng = np.random.default_rng(seed)

  def array(k, n):
    return jnp.asarray(rng.standard_normal((k, n), np.float32) / np.sqrt(k))

  mlp_in = 2 if config.mlp_kind == "swiglu" else 1
  q, kv = config.num_heads * hd, config.num_kv_heads * hd

  def layer():
    if fused:  # The serving layout (param_layout.decode_layout): one q/k/v, one MLP-in kernel.
      kernels = {"qkv": [array(d, q + 2 * kv)], "mlp_in": [array(d, mlp_in * config.mlp_dim)]}
    else:
      kernels = {"qkv": [array(d, q), array(d, kv), array(d, kv)],
                 "mlp_in": [array(d, config.mlp_dim) for _ in range(mlp_in)]}
    return {**kernels, "out": array(q, d), "mlp_out": array(config.mlp_dim, d)}

  layers = [layer() for _ in range(config.num_layers)]
  return {"layers": layers, "logits": array(d, config.vocab_size) if logits else None}


def _normalised(x_RD):
  return x_RD * jax.lax.rsqrt(jnp.mean(jnp.square(x_RD), axis=-1, keepdims=True) + 1e-6)


def _pass(weights, x_RD):
  for w in weights["layers"]:
    queries, hidden = w["out"].shape[0], w["mlp_out"].shape[0]
    h_RD = _normalised(x_RD)
    qkv = [h_RD @ w_in for w_in in w["qkv"]]  # one fused product or three, never concatenated
    keys_values = [part for part in [qkv[0][:, queries:]] + qkv[1:] if part.shape[-1]]
    # Keys and values feed the next layer through a cheap reduction, so neither is dropped.
    kv_R1 = sum(jnp.mean(part, axis=-1, keepdims=True) for part in keys_values)
    x_RD = x_RD + qkv[0][:, :queries] @ w["out"] + kv_R1
    h_RD = _normalised(x_RD)
    inner = [h_RD @ w_in for w_in in w["mlp_in"]]
    if sum(part.shape[-1] for part in inner) == 2 * hidden:  # SwiGLU: gate, then up.
      gate_RF, up_RF = inner if len(inner) == 2 else jnp.split(inner[0], 2, axis=-1)
      hidden_RF = jax.nn.silu(gate_RF) * up_RF
    else:
      hidden_RF = jax.nn.gelu(inner[0])
    x_RD = x_RD + hidden_RF @ w["mlp_out"]
  if weights["logits"] is not None:
    x_RD = x_RD + 1e-3 * jnp.max(_normalised(x_RD) @ weights["logits"], axis=-1, keepdims=True)
  return x_RD


def jitted(config: DecoderConfig, rows: int, steps: int = 1, logits: bool = True,
           fused: bool = False, seed: int = 0):
  """(the jitted passes, their arguments: random weights and inputs). `fused`: the serving
  layout's kernels, as the sampler runs them; the RM runs the separate ones."""
  weights = _weights(config, logits, fused, seed)
  x_RD = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(
      (rows, config.d_model), np.float32))

  def run(weights, x_RD):
    return jax.lax.fori_loop(0, steps, lambda _, x: _pass(weights, x), x_RD)

  return jax.jit(run, compiler_options=programs.compiler_options()), (weights, x_RD)


def program(config: DecoderConfig, rows: int, steps: int = 1, logits: bool = True,
            fused: bool = False, seed: int = 0):
  """A function with no arguments that runs `steps` chained forward passes over `rows`
  positions as one compiled program and waits for them."""
  compiled, (weights, x_RD) = jitted(config, rows, steps, logits, fused, seed)

  def run_once():
    jax.block_until_ready(compiled(weights, x_RD))

  return run_once


@dataclasses.dataclass(frozen=True)
class Passes:
  """`steps` chained passes over `rows` positions (see `program`)."""
  rows: int
  steps: int = 1
  logits: bool = True
  fused: bool = False


def floor(config: DecoderConfig, *passes: Passes):
  """(a function with no arguments that runs each of `passes` as its own program, in order, and
  waits for them; their FLOPs): what a benchmark times as its matmul floor."""
  runs = [program(config, p.rows, p.steps, p.logits, p.fused) for p in passes]
  flops = sum(forward_flops(config, p.rows, p.steps, p.logits) for p in passes)
  return (lambda: [run() for run in runs]), flops
