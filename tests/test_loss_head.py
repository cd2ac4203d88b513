"""loss_head: the fused head's loss, accuracy and gradients are the logits path's, without
the logits."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from consensus_jax import gin_utils
from consensus_jax import partitioning
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig
from consensus_jax.objectives import loss_head, sft

B, L, E, V = 4, 21, 16, 96  # L = 21: two full chunks of 8 and a padded one.


def _inputs(seed=0):
  rng = np.random.RandomState(seed)
  hidden_BLE = jnp.asarray(rng.randn(B, L, E).astype(np.float32))
  unembed_EV = jnp.asarray(rng.randn(E, V).astype(np.float32))
  logits_BLV = np.asarray(hidden_BLE).reshape(-1, E) @ np.asarray(unembed_EV)
  # A third of the targets are the top logit, so the hit count is neither 0 nor all.
  targets_BL = jnp.asarray(np.where(rng.rand(B * L) < 0.33, logits_BLV.argmax(-1),
                                    rng.randint(0, V, B * L)).reshape(B, L).astype(np.int32))
  weights_BL = jnp.asarray((rng.rand(B, L) < 0.7).astype(np.float32))
  return hidden_BLE, unembed_EV, targets_BL, weights_BL


def _reference(hidden_BLE, unembed_EV, targets_BL, weights_BL, z_loss):
  logits_BLV = jnp.einsum("BLE,EV->BLV", hidden_BLE, unembed_EV)
  token_loss_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL)
  token_loss_BL += z_loss * jnp.square(jax.nn.logsumexp(logits_BLV, axis=-1))
  hits_BL = loss_head.target_is_top(logits_BLV, targets_BL)
  return jnp.sum(token_loss_BL * weights_BL), jnp.sum(hits_BL * weights_BL)


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_loss_hits_and_gradients_match_the_logits_path(z_loss):
  hidden_BLE, unembed_EV, targets_BL, weights_BL = _inputs()

  def value_and_grads(fn):
    def scaled_loss(h, w):  # A cotangent other than 1, as the trainer's 1/denominator is.
      loss, hits = fn(h, w, targets_BL, weights_BL, z_loss)
      return 0.37 * loss, (loss, hits)
    return jax.jit(jax.grad(scaled_loss, argnums=(0, 1), has_aux=True))(hidden_BLE, unembed_EV)

  (d_hidden, d_unembed), (loss, hits) = value_and_grads(
      lambda *a: loss_head.cross_entropy_sums(*a, 8))
  (ref_d_hidden, ref_d_unembed), (ref_loss, ref_hits) = value_and_grads(_reference)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert float(hits) == float(ref_hits) and 0 < float(hits) < float(jnp.sum(weights_BL))
  np.testing.assert_allclose(d_hidden, ref_d_hidden, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(d_unembed, ref_d_unembed, rtol=1e-4, atol=1e-5)
  # Zero-weight positions (the padding among them) get no gradient.
  assert float(jnp.abs(d_hidden * (weights_BL == 0)[..., None]).max()) == 0.0


def test_without_a_gradient_it_computes_the_same_sums():
  hidden_BLE, unembed_EV, targets_BL, weights_BL = _inputs(1)
  sums = jax.jit(lambda *a: loss_head.cross_entropy_sums(*a, 0.0, 8))(
      hidden_BLE, unembed_EV, targets_BL, weights_BL)
  reference = _reference(hidden_BLE, unembed_EV, targets_BL, weights_BL, 0.0)
  np.testing.assert_allclose(sums, reference, rtol=1e-5)


def test_the_logits_never_reach_memory():
  """The fused gradient's temporaries are a few chunks' logits (8 x 32 positions: 8 MB), not the
  [B, L, V] logits (8 x 256 positions: 65 MB) that the unfused gradient holds."""
  batch, length, embed, vocab = 8, 256, 32, 8000
  args = (jax.ShapeDtypeStruct((batch, length, embed), jnp.float32),
          jax.ShapeDtypeStruct((embed, vocab), jnp.float32),
          jax.ShapeDtypeStruct((batch, length), jnp.int32),
          jax.ShapeDtypeStruct((batch, length), jnp.float32))

  def temp_bytes(fn):
    grad = jax.grad(lambda h, w, t, m: fn(h, w, t, m)[0], argnums=(0, 1))
    return jax.jit(grad).lower(*args).compile().memory_analysis().temp_size_in_bytes

  logits_bytes = batch * length * vocab * 4
  fused = temp_bytes(lambda *a: loss_head.cross_entropy_sums(*a, 0.0, 32))
  unfused = temp_bytes(lambda *a: _reference(*a, 0.0))
  assert unfused >= logits_bytes
  chunk_bytes = batch * 32 * vocab * 4
  assert fused <= 4 * chunk_bytes < logits_bytes, (fused, chunk_bytes)


CONFIG = DecoderConfig(vocab_size=128, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=64, max_seq_len=64, dtype="float32")


@pytest.mark.parametrize("tie", [False, True])
def test_sft_gradients_fused_and_unfused_agree_on_a_sharded_mesh(tie):
  """SFTObjective's loss with the fused head (chunks of 8 positions) against the logits path,
  both on a (data 2, fsdp 2, tensor 2) mesh: the vocabulary split over `tensor`, the batch
  over data x fsdp, every param's gradient the same."""
  config = dataclasses.replace(CONFIG, tie_embeddings=tie)
  mesh = partitioning.make_mesh(2, 2, 2)
  params = params_lib.init_params(config, mesh, jax.random.key(0))
  rng = np.random.RandomState(3)
  tokens = rng.randint(1, 128, (8, 20)).astype(np.int32)
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": np.roll(tokens, -1, 1),
           "decoder_loss_weights": (rng.rand(8, 20) < 0.8).astype(np.int32),
           "decoder_positions": np.broadcast_to(np.arange(20), (8, 20)).astype(np.int32),
           "decoder_segment_ids": np.ones((8, 20), np.int32)}
  batch = jax.device_put(batch, partitioning.batch_sharding(mesh))

  def grads(loss_chunk):
    objective = sft.SFTObjective(config, z_loss=1e-3, loss_chunk=loss_chunk)

    def loss(p):
      out = objective.loss(p, batch, jax.random.key(0))
      return out.loss_sum / out.denominator, out.metric_sums["accuracy"]

    with jax.set_mesh(mesh):
      return jax.jit(jax.grad(loss, has_aux=True))(params)

  (fused, fused_hits), (unfused, unfused_hits) = grads(8), grads(0)
  assert float(fused_hits) == float(unfused_hits)
  flat_fused = jax.tree_util.tree_leaves_with_path(fused)
  for (path, got), want in zip(flat_fused, jax.tree_util.tree_leaves(unfused)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6, err_msg=str(path))
    assert got.sharding.is_equivalent_to(want.sharding, got.ndim), path
  assert float(jnp.abs(fused["unembed" if not tie else "embedding"]).max()) > 0


def test_a_negative_loss_chunk_is_refused_naming_the_binding():
  with pytest.raises(gin_utils.BindingError,
                     match=r"SFTObjective.loss_chunk \(0: unfused\) must be >= 0, got -1"):
    sft.SFTObjective(CONFIG, loss_chunk=-1)
