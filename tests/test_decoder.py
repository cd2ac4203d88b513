"""Decoder behaviour: packing, padding, layer stacking, remat, compute dtype, config checks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax.models import decoder
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=128, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=64, max_seq_len=64)


def _init(config, seed=0):
  init = jax.jit(lambda key: decoder.Decoder(config).init(key, jnp.zeros((1, 8), jnp.int32)))
  return nn.meta.unbox(init(jax.random.key(seed))["params"])


def _apply(config, params, tokens, positions_BL=None, segment_ids_BL=None, **flags):
  apply = jax.jit(lambda p, t, pos, seg: decoder.Decoder(config).apply(
      {"params": p}, t, positions_BL=pos, segment_ids_BL=seg, **flags))
  return apply(params, jnp.asarray(tokens), positions_BL, segment_ids_BL)


def test_packed_segments_equal_separate_sequences():
  params = _init(CONFIG)
  rng = np.random.RandomState(0)
  a, b = rng.randint(3, 128, 7), rng.randint(3, 128, 5)
  packed = np.zeros((1, 16), np.int32)
  packed[0, :7], packed[0, 7:12] = a, b
  segments = np.array([[1] * 7 + [2] * 5 + [0] * 4])
  positions = np.array([list(range(7)) + list(range(5)) + [0] * 4])
  logits = _apply(CONFIG, params, packed, positions_BL=positions, segment_ids_BL=segments)
  np.testing.assert_allclose(logits[0, :7], _apply(CONFIG, params, a[None])[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 7:12], _apply(CONFIG, params, b[None])[0], atol=1e-5)


def test_padding_does_not_change_real_positions_and_is_finite():
  params = _init(CONFIG)
  tokens = np.random.RandomState(1).randint(3, 128, (2, 10))
  padded = np.concatenate([tokens, np.zeros((2, 6), np.int64)], axis=1)
  segments = np.concatenate([np.ones((2, 10)), np.zeros((2, 6))], axis=1).astype(np.int32)
  logits = _apply(CONFIG, params, padded, segment_ids_BL=segments)
  assert np.isfinite(np.asarray(logits)).all()
  np.testing.assert_allclose(logits[:, :10], _apply(CONFIG, params, tokens), atol=1e-5)


def test_causality():
  params = _init(CONFIG)
  tokens = np.random.RandomState(2).randint(3, 128, (1, 12))
  changed = tokens.copy()
  changed[0, 8:] = (changed[0, 8:] + 1) % 128
  np.testing.assert_allclose(_apply(CONFIG, params, tokens)[0, :8],
                             _apply(CONFIG, params, changed)[0, :8], atol=1e-6)
  assert not np.allclose(_apply(CONFIG, params, tokens)[0, 8:],
                         _apply(CONFIG, params, changed)[0, 8:])


def test_hidden_states_are_returned_on_request():
  params = _init(CONFIG)
  tokens = np.random.RandomState(3).randint(3, 128, (2, 9))
  logits, hidden = _apply(CONFIG, params, tokens, return_hidden=True)
  assert hidden.shape == (2, 9, 32)
  only_hidden = _apply(CONFIG, params, tokens, compute_logits=False)
  np.testing.assert_allclose(hidden, only_hidden, atol=1e-6)
  np.testing.assert_allclose(logits, hidden @ params["unembed"], atol=1e-4)


def _loss_and_grads(config, params, tokens, positions_BL=None, segment_ids_BL=None):
  real_BL1 = 1.0 if segment_ids_BL is None else (jnp.asarray(segment_ids_BL) != 0)[..., None]

  def loss(p):
    return jnp.mean((_apply(config, p, tokens, positions_BL, segment_ids_BL) * real_BL1) ** 2)
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch", "save_qkv_proj",
                                    "save_qkv_out_proj"])
def test_remat_policies_change_memory_not_results(policy):
  params = _init(CONFIG)
  tokens = np.random.RandomState(4).randint(3, 128, (2, 12))
  loss, grads = _loss_and_grads(CONFIG, params, tokens)
  loss_r, grads_r = _loss_and_grads(CONFIG.replace(remat_policy=policy), params, tokens)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-5)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), grads_r,
                         grads)


def test_scanned_and_unrolled_layers_agree():
  scanned = _init(CONFIG)
  unrolled = {k: v for k, v in scanned.items() if k != "layers"}
  for i in range(CONFIG.num_layers):
    unrolled[f"layers_{i}"] = jax.tree_util.tree_map(lambda w, i=i: w[i], scanned["layers"])
  tokens = np.random.RandomState(5).randint(3, 128, (2, 12))
  unrolled_config = CONFIG.replace(scan_layers=False, remat_policy="full")
  assert jax.tree_util.tree_structure(_init(unrolled_config)) == jax.tree_util.tree_structure(
      unrolled)
  np.testing.assert_allclose(_apply(unrolled_config, unrolled, tokens),
                             _apply(CONFIG, scanned, tokens), atol=1e-5)


def test_unrolled_scan_keeps_the_scanned_layout_and_results():
  params = _init(CONFIG)
  unrolled_scan = CONFIG.replace(scan_unroll=CONFIG.num_layers)
  assert jax.tree_util.tree_structure(_init(unrolled_scan)) == jax.tree_util.tree_structure(
      params)
  tokens = np.random.RandomState(7).randint(3, 128, (2, 12))
  loss, grads = _loss_and_grads(CONFIG, params, tokens)
  loss_u, grads_u = _loss_and_grads(unrolled_scan, params, tokens)
  np.testing.assert_allclose(loss_u, loss, rtol=1e-5)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), grads_u,
                         grads)


def test_causal_query_blocks_keep_results_and_gradients():
  """attention_query_block computes less of the score matrix, not a different model: packed
  rows with padding give the same logits on real positions and the same gradients."""
  params = _init(CONFIG)
  rng = np.random.RandomState(8)
  tokens = rng.randint(3, 128, (2, 21))
  segments = np.array([[1] * 9 + [2] * 12, [1] * 17 + [0] * 4], np.int32)
  positions = np.array([list(range(9)) + list(range(12)), list(range(17)) + [0] * 4], np.int32)
  blocked = CONFIG.replace(attention_query_block=4)
  real = segments[..., None] != 0
  np.testing.assert_allclose(
      np.asarray(_apply(blocked, params, tokens, positions, segments)) * real,
      np.asarray(_apply(CONFIG, params, tokens, positions, segments)) * real, atol=1e-5)
  loss, grads = _loss_and_grads(CONFIG, params, tokens, positions, segments)
  loss_b, grads_b = _loss_and_grads(blocked, params, tokens, positions, segments)
  np.testing.assert_allclose(loss_b, loss, rtol=1e-5)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), grads_b,
                         grads)


def test_bfloat16_compute_keeps_float32_params_and_is_close():
  config = CONFIG.replace(dtype="bfloat16")
  params = _init(config)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  tokens = np.random.RandomState(6).randint(3, 128, (2, 12))
  logits = _apply(config, params, tokens)
  assert logits.dtype == jnp.float32
  reference = _apply(CONFIG, params, tokens)
  assert np.max(np.abs(np.asarray(logits) - np.asarray(reference))) < 0.1 * np.std(reference)


@pytest.mark.parametrize("changes, message", [
    (dict(num_heads=4, num_kv_heads=3), "num_kv_heads=3 must divide num_heads=4"),
    (dict(d_model=30, num_heads=4), "must divide d_model=30"),
    (dict(mlp_kind="relu"), "mlp_kind='relu'"),
    (dict(remat_policy="some"), "remat_policy='some'"),
    (dict(dtype="int8"), "dtype='int8'"),
    (dict(scan_unroll=0), "scan_unroll=0 must lie in 1..num_layers"),
])
def test_config_errors_name_the_field(changes, message):
  with pytest.raises(ValueError, match=message):
    CONFIG.replace(**changes)
