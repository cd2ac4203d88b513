"""softmax(q k^T + mask) v over heads-major arrays, with a hand-written backward.

Shapes: q_BKGLD [batch, kv_heads, groups, length, head_dim] (already scaled), k_BKSD and v_BKSD
[batch, kv_heads, keys, head_dim], mask_B11LS a boolean [batch, 1, 1, length, keys] (or any
shape broadcasting to the scores). Query group g of kv head k is query head k * G + g.

Why not autodiff: XLA on CPU runs the generated backward with a transposed copy of the
score-sized gradient dS (dK = dS^T q contracts over queries; ~15 ms per layer of `small` at
8 x 256), reduces sum(dP * P) over keys, and keeps the normalised probabilities. Here the forward
keeps the unnormalised exp(s - max) and 1/sum, the backward takes the row term from sum(dO * O)
over head_dim (FlashAttention-2's D), and dK, dV are computed as q^T dS and dO^T P, whose
transposes are head_dim-sized. Same values up to float rounding (tests/test_softmax_attention.py).

`causal_blocks` splits a causal self-attention's queries into blocks, each against only the keys
at or before its block's end: the masked upper triangle is never computed (about half the
score-sized work and memory traffic at long lengths, forward and backward).
"""
import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e30  # Finite, so fully masked rows (padding) give a uniform softmax, not NaN.


@jax.custom_vjp
def attention(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS):
  return _forward(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS)[0]


def _forward(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS):
  scores_BKGLS = jnp.einsum("BKGLD,BKSD->BKGLS", q_BKGLD, k_BKSD,
                            preferred_element_type=jnp.float32)
  scores_BKGLS = jnp.where(mask_B11LS, scores_BKGLS, NEG_INF)
  exp_BKGLS = jnp.exp(scores_BKGLS - jnp.max(scores_BKGLS, axis=-1, keepdims=True))
  inv_sum_BKGL1 = 1.0 / jnp.sum(exp_BKGLS, axis=-1, keepdims=True)
  exp_BKGLS = exp_BKGLS.astype(q_BKGLD.dtype)
  out_BKGLD = (jnp.einsum("BKGLS,BKSD->BKGLD", exp_BKGLS, v_BKSD,
                          preferred_element_type=jnp.float32) * inv_sum_BKGL1)
  out_BKGLD = out_BKGLD.astype(q_BKGLD.dtype)
  return out_BKGLD, (q_BKGLD, k_BKSD, v_BKSD, mask_B11LS, exp_BKGLS, inv_sum_BKGL1, out_BKGLD)


def _backward(residuals, d_out_BKGLD):
  q_BKGLD, k_BKSD, v_BKSD, mask_B11LS, exp_BKGLS, inv_sum_BKGL1, out_BKGLD = residuals
  dtype = q_BKGLD.dtype
  d_out32_BKGLD = d_out_BKGLD.astype(jnp.float32)
  # dV = P^T dO, computed transposed: [D, S] per head, then a head_dim-sized transpose.
  d_value_BKDS = jnp.einsum("BKGLD,BKGLS->BKDS", (d_out32_BKGLD * inv_sum_BKGL1).astype(dtype),
                            exp_BKGLS, preferred_element_type=jnp.float32)
  d_probs_BKGLS = jnp.einsum("BKGLD,BKSD->BKGLS", d_out_BKGLD, v_BKSD,
                             preferred_element_type=jnp.float32)
  row_BKGL1 = jnp.sum(d_out32_BKGLD * out_BKGLD.astype(jnp.float32), axis=-1, keepdims=True)
  # dS = P * (dP - D), and 0 where masked: those scores are constants, even in a fully masked
  # (padding) row, whose probabilities are uniform.
  d_scores_BKGLS = jnp.where(mask_B11LS,
                             exp_BKGLS * (d_probs_BKGLS - row_BKGL1) * inv_sum_BKGL1,
                             0.0).astype(dtype)
  d_query_BKGLD = jnp.einsum("BKGLS,BKSD->BKGLD", d_scores_BKGLS, k_BKSD)
  d_key_BKDS = jnp.einsum("BKGLD,BKGLS->BKDS", q_BKGLD, d_scores_BKGLS,
                          preferred_element_type=jnp.float32)
  return (d_query_BKGLD, d_key_BKDS.transpose(0, 1, 3, 2).astype(k_BKSD.dtype),
          d_value_BKDS.transpose(0, 1, 3, 2).astype(v_BKSD.dtype),
          np.zeros(mask_B11LS.shape, jax.dtypes.float0))


attention.defvjp(_forward, _backward)


def causal_block_bounds(length: int, block: int) -> list[tuple[int, int]]:
  """(start, end) of each block of queries `causal_blocks` scores; each block sees keys [0, end).
  One block of every query when `block` is 0 or covers the row."""
  if block <= 0 or block >= length:
    return [(0, length)]
  return [(start, min(start + block, length)) for start in range(0, length, block)]


def causal_blocks(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS, block: int):
  """`attention` for self-attention under a causal mask (query i at key position i, S == L),
  computed block by block of `block` queries, each against keys [0, end of its block).

  Exact for every query with at least one visible key (the keys dropped are masked for it). A
  query that sees nothing (padding) gets a uniform average over fewer keys than `attention`
  gives it; no loss reads those outputs, and real queries never attend to padding keys.
  """
  length = q_BKGLD.shape[3]
  if block <= 0 or block >= length:
    return attention(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS)
  if k_BKSD.shape[2] != length:
    raise ValueError(f"causal_blocks: self-attention needs as many keys ({k_BKSD.shape[2]}) "
                     f"as queries ({length})")
  mask_B11LS = jnp.broadcast_to(
      mask_B11LS, jnp.broadcast_shapes(mask_B11LS.shape, (1, 1, 1, length, length)))
  outs = []
  for start, end in causal_block_bounds(length, block):
    outs.append(attention(q_BKGLD[:, :, :, start:end], k_BKSD[:, :, :end], v_BKSD[:, :, :end],
                          mask_B11LS[:, :, :, start:end, :end]))
  return jnp.concatenate(outs, axis=3)
