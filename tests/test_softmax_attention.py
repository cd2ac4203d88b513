"""softmax_attention.attention: values and gradients equal autodiff of the plain formulation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax.models import layers, softmax_attention


def _plain(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS):
  scores = jnp.einsum("BKGLD,BKSD->BKGLS", q_BKGLD, k_BKSD)
  probs = jax.nn.softmax(jnp.where(mask_B11LS, scores, -1e30), axis=-1)
  return jnp.einsum("BKGLS,BKSD->BKGLD", probs, v_BKSD)


@pytest.mark.parametrize("groups", [1, 3])
def test_values_and_gradients_match_autodiff(groups):
  batch, kv_heads, length, head_dim = 2, 2, 7, 4
  rng = np.random.RandomState(groups)
  q = jnp.asarray(rng.randn(batch, kv_heads, groups, length, head_dim), jnp.float32)
  k = jnp.asarray(rng.randn(batch, kv_heads, length, head_dim), jnp.float32)
  v = jnp.asarray(rng.randn(batch, kv_heads, length, head_dim), jnp.float32)
  # Two packed segments in row 0; left padding (segment 0: fully masked rows) in row 1.
  segments = jnp.asarray([[1, 1, 1, 2, 2, 2, 2], [0, 0, 1, 1, 1, 1, 1]])
  mask = layers.attention_mask(segments)
  weights = jnp.asarray(rng.randn(batch, kv_heads, groups, length, head_dim), jnp.float32)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v, mask) * weights)

  np.testing.assert_allclose(softmax_attention.attention(q, k, v, mask), _plain(q, k, v, mask),
                             atol=1e-5)
  ours = jax.grad(lambda *a: loss(softmax_attention.attention, *a), argnums=(0, 1, 2))(q, k, v)
  reference = jax.grad(lambda *a: loss(_plain, *a), argnums=(0, 1, 2))(q, k, v)
  for name, got, want in zip("qkv", ours, reference):
    assert float(jnp.max(jnp.abs(want))) > 1e-2, name  # a gradient that could be wrong
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"d{name}")


@pytest.mark.parametrize("block", [3, 4, 16])
def test_causal_blocks_equal_the_full_attention_on_every_real_query(block):
  """Blocks of queries against keys up to their block's end: the same outputs and gradients as
  scoring every key, with packed segments, RM branches and left padding, at lengths that are not
  a multiple of the block (a block of 16 > length runs the full attention)."""
  batch, kv_heads, groups, length, head_dim = 3, 2, 2, 10, 4
  rng = np.random.RandomState(block)
  q = jnp.asarray(rng.randn(batch, kv_heads, groups, length, head_dim), jnp.float32)
  k = jnp.asarray(rng.randn(batch, kv_heads, length, head_dim), jnp.float32)
  v = jnp.asarray(rng.randn(batch, kv_heads, length, head_dim), jnp.float32)
  segments = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0],
                          [0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
                          [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
  branches = jnp.asarray([[0, 0, 1, 1, 0, 1, 1, 2, 2, 0],
                          [0, 0, 0, 0, 0, 1, 1, 2, 2, 2],
                          [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]])
  mask = layers.attention_mask(segments, branches)
  real = np.asarray(segments != 0)[:, None, None, :, None]
  weights = jnp.asarray(rng.randn(batch, kv_heads, groups, length, head_dim) * real, jnp.float32)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v, mask) * weights)

  blocked = lambda q, k, v, m: softmax_attention.causal_blocks(q, k, v, m, block)
  np.testing.assert_allclose(np.asarray(blocked(q, k, v, mask)) * real,
                             np.asarray(softmax_attention.attention(q, k, v, mask)) * real,
                             atol=1e-5)
  ours = jax.grad(lambda *a: loss(blocked, *a), argnums=(0, 1, 2))(q, k, v)
  reference = jax.grad(lambda *a: loss(softmax_attention.attention, *a), argnums=(0, 1, 2))(
      q, k, v)
  for name, got, want in zip("qkv", ours, reference):
    assert float(jnp.max(jnp.abs(want))) > 1e-2, name
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"d{name}")


def test_causal_blocks_refuse_cross_attention():
  q = jnp.zeros((1, 1, 1, 4, 2))
  k = jnp.zeros((1, 1, 6, 2))
  with pytest.raises(ValueError, match="self-attention"):
    softmax_attention.causal_blocks(q, k, k, jnp.ones((1, 1, 1, 4, 6), bool), 2)


def test_causal_blocks_take_a_broadcast_mask():
  rng = np.random.RandomState(0)
  q = jnp.asarray(rng.randn(2, 1, 2, 9, 4), jnp.float32)
  k = jnp.asarray(rng.randn(2, 1, 9, 4), jnp.float32)
  causal_LL = jnp.tril(jnp.ones((9, 9), bool))
  np.testing.assert_allclose(softmax_attention.causal_blocks(q, k, k, causal_LL, 4),
                             softmax_attention.attention(q, k, k, causal_LL), atol=1e-5)
