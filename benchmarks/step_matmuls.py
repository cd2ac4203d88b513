"""A decoder train step's matrix multiplications alone, as one compiled program: the floor a step
of that shape cannot go under with these dots, however well the rest of it is fused.

Every projection X[T, k] @ W[k, n] of the step (T = batch x seq tokens) costs three matmuls,
forward Y = X W and backward dX = dY W^T and dW = X^T dY; causal attention in query blocks
(`DecoderConfig.attention_query_block`, as `softmax_attention.causal_blocks` runs it) costs per
block two forward batched matmuls (scores, values) and four backward ones. The program runs
them at the step's exact shapes and layouts, with the step's compiler options (Eigen dots on
CPU), and returns every product so none is dropped. Norms, rotary, softmax, the loss, gradient
clipping and the optimizer are left out: they are what the step adds on top of this floor.
`torch_program` runs the same products on the same operands with torch's matmuls (oneDNN / MKL
on CPU): the peer's floor.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax import programs
from consensus_jax.models import softmax_attention
from consensus_jax.models.config import DecoderConfig


@dataclasses.dataclass(frozen=True)
class Projection:
  name: str
  inputs: int   # k
  outputs: int  # n
  count: int    # how many of this shape the step has


def projections(config: DecoderConfig) -> list[Projection]:
  """The step's weight matmuls by shape; the output projection to the vocabulary included."""
  d, hd = config.d_model, config.resolved_head_dim
  layers = config.num_layers
  mlp_in = 2 if config.mlp_kind == "swiglu" else 1
  return [Projection("query", d, config.num_heads * hd, layers),
          Projection("key, value", d, config.num_kv_heads * hd, 2 * layers),
          Projection("attention out", config.num_heads * hd, d, layers),
          Projection("mlp in", d, config.mlp_dim, mlp_in * layers),
          Projection("mlp out", config.mlp_dim, d, layers),
          Projection("logits", d, config.vocab_size, 1)]


def query_blocks(config: DecoderConfig, seq: int) -> list[tuple[int, int]]:
  """(queries, keys) of each attention block of a row of `seq`, as causal_blocks runs it."""
  return [(end - start, end) for start, end in
          softmax_attention.causal_block_bounds(seq, config.attention_query_block)]


def matmul_flops(config: DecoderConfig, batch: int, seq: int) -> float:
  """FLOPs of the program below (forward and backward): 2 per multiply-add."""
  tokens = batch * seq
  weights = sum(3 * 2.0 * tokens * p.inputs * p.outputs * p.count for p in projections(config))
  heads, hd = config.num_heads, config.resolved_head_dim
  attention = sum(6 * 2.0 * batch * heads * q * k * hd for q, k in query_blocks(config, seq))
  return weights + config.num_layers * attention


def operands(config: DecoderConfig, batch: int, seq: int, seed: int = 0):
  """Random operands for every product of the step; no two products share all their operands,
  so XLA cannot merge repeats. Returns (weight operands, attention operands)."""
  tokens = batch * seq
  heads, hd = config.num_heads, config.resolved_head_dim
  rng = np.random.default_rng(seed)

  def array(*shape):
    return jnp.asarray(rng.standard_normal(shape, np.float32) * 0.05)

  weights = [(array(tokens, p.inputs), array(p.inputs, p.outputs), array(tokens, p.outputs))
             for p in projections(config) for _ in range(p.count)]
  attention = [
      {"q": array(batch, heads, q, hd), "k": array(batch, heads, k, hd),
       "v": array(batch, heads, k, hd), "probs": array(batch, heads, q, k),
       "d_out": array(batch, heads, q, hd), "d_scores": array(batch, heads, q, k)}
      for _ in range(config.num_layers) for q, k in query_blocks(config, seq)]
  return weights, attention


def products(weight_operands, attention_operands) -> list[jax.Array]:
  """Every matmul of the step: three per projection, six per attention block."""
  out = []
  for x_TK, w_KN, dy_TN in weight_operands:
    out += [x_TK @ w_KN, dy_TN @ w_KN.T, x_TK.T @ dy_TN]
  for a in attention_operands:
    out += [jnp.einsum("bhqd,bhkd->bhqk", a["q"], a["k"]),            # scores
            jnp.einsum("bhqk,bhkd->bhqd", a["probs"], a["v"]),        # output
            jnp.einsum("bhqd,bhkd->bhqk", a["d_out"], a["v"]),        # d probabilities
            jnp.einsum("bhqk,bhqd->bhkd", a["probs"], a["d_out"]),    # d values
            jnp.einsum("bhqk,bhkd->bhqd", a["d_scores"], a["k"]),     # d queries
            jnp.einsum("bhqk,bhqd->bhkd", a["d_scores"], a["q"])]     # d keys
  return out


def program(config: DecoderConfig, batch: int, seq: int):
  """A function with no arguments that runs the step's matmuls once, as one compiled program
  with the step's compiler options, and waits for them."""
  weight_operands, attention_operands = operands(config, batch, seq)
  compiled = jax.jit(products, compiler_options=programs.compiler_options())

  def run_once():
    jax.block_until_ready(compiled(weight_operands, attention_operands))

  return run_once


def torch_program(config: DecoderConfig, batch: int, seq: int, threads: int | None = None):
  """`program`'s products with torch's matmuls, on the same operands."""
  import torch

  if threads:
    torch.set_num_threads(threads)
  weight_operands, attention_operands = operands(config, batch, seq)
  weights = [tuple(torch.from_numpy(np.array(x)) for x in triple) for triple in weight_operands]
  attention = [{k: torch.from_numpy(np.array(v)) for k, v in a.items()}
               for a in attention_operands]

  def run_once():
    with torch.inference_mode():
      out = []
      for x_TK, w_KN, dy_TN in weights:
        out += [x_TK @ w_KN, dy_TN @ w_KN.T, x_TK.T @ dy_TN]
      for a in attention:
        out += [a["q"] @ a["k"].transpose(-1, -2), a["probs"] @ a["v"],
                a["d_out"] @ a["v"].transpose(-1, -2), a["probs"].transpose(-1, -2) @ a["d_out"],
                a["d_scores"] @ a["k"], a["d_scores"].transpose(-1, -2) @ a["q"]]
    return out

  return run_once
