"""SFTObjective.loss: its accuracy metric, counted without an argmax, is the argmax's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax.models import decoder
from consensus_jax.models.config import DecoderConfig
from consensus_jax.objectives import loss_head, sft

CONFIG = DecoderConfig(vocab_size=64, num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                       mlp_dim=32, max_seq_len=16)


def test_target_is_top_is_the_argmax_hit_where_the_max_is_unique():
  rng = np.random.RandomState(0)
  logits_BLV = rng.randn(4, 9, 50).astype(np.float32)
  # Half the targets are the argmax, half random: both answers occur.
  targets_BL = np.where(rng.rand(4, 9) < 0.5, logits_BLV.argmax(-1), rng.randint(0, 50, (4, 9)))
  hits = np.asarray(loss_head.target_is_top(jnp.asarray(logits_BLV), jnp.asarray(targets_BL)))
  np.testing.assert_array_equal(hits, logits_BLV.argmax(-1) == targets_BL)
  assert 0 < hits.sum() < hits.size


def test_a_tie_for_the_largest_logit_is_not_a_hit():
  logits_BLV = jnp.asarray([[[1.0, 3.0, 3.0, 0.0], [1.0, 3.0, 2.0, 0.0]]])
  hits = loss_head.target_is_top(logits_BLV, jnp.asarray([[1, 1]]))
  np.testing.assert_array_equal(np.asarray(hits), [[False, True]])


def test_loss_accuracy_sums_the_weighted_argmax_hits():
  objective = sft.SFTObjective(CONFIG)
  tokens = jnp.asarray(np.random.RandomState(1).randint(1, 64, (2, 12)), jnp.int32)
  params = nn.meta.unbox(decoder.Decoder(CONFIG).init(jax.random.key(0), tokens)["params"])
  weights = jnp.asarray(np.random.RandomState(2).randint(0, 2, (2, 12)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
  logits = decoder.Decoder(CONFIG).apply({"params": params}, tokens, positions,
                                         jnp.ones((2, 12), jnp.int32))
  # Targets: the model's own top token where the weight is 1 at even positions, else token 5.
  targets = jnp.where(positions % 2 == 0, jnp.argmax(logits, -1), 5)
  batch = {"decoder_input_tokens": tokens, "decoder_target_tokens": targets,
           "decoder_loss_weights": weights, "decoder_positions": positions,
           "decoder_segment_ids": jnp.ones((2, 12), jnp.int32)}
  out = objective.loss(params, batch, jax.random.key(0))
  expected = np.sum((np.argmax(logits, -1) == targets) * weights)
  assert float(out.metric_sums["accuracy"]) == expected
  assert expected >= float(jnp.sum(weights * (positions % 2 == 0)))
