"""benchmarks.step_parts times like against like: each part's two sides give the same numbers."""
import dataclasses

import numpy as np
import pytest

from benchmarks import step_parts
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=40, num_layers=2, d_model=16, num_heads=4, num_kv_heads=2,
                       mlp_dim=24, max_seq_len=32, attention_query_block=8)


@pytest.mark.parametrize("block", [0, 8])
def test_attention_sides_agree_on_output_and_gradients(block):
  config = dataclasses.replace(CONFIG, attention_query_block=block)
  inputs = step_parts.attention_inputs(config, 2, 24)
  ours = step_parts.attention_ours(config, inputs)()
  peer = step_parts.attention_torch(config, inputs)()
  for a, b in zip(ours, peer):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=2e-5, rtol=2e-4)


def test_loss_head_sides_agree_and_hits_count_top_targets():
  inputs = step_parts.head_inputs(CONFIG, 2, 24)
  logits_BLV = inputs["hidden_BLE"] @ inputs["unembed_EV"]
  inputs["targets_BL"][0, :10] = logits_BLV[0, :10].argmax(-1)
  loss_sum, hits, d_hidden, d_unembed = step_parts.loss_head_ours(inputs)()
  peer_loss, peer_d_hidden, peer_d_unembed = step_parts.loss_head_torch(inputs)()
  np.testing.assert_allclose(float(loss_sum), float(peer_loss), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(d_hidden), peer_d_hidden.numpy(), atol=1e-5)
  np.testing.assert_allclose(np.asarray(d_unembed), peer_d_unembed.numpy(), atol=1e-5)
  assert int(hits) == int(np.sum(logits_BLV.argmax(-1) == inputs["targets_BL"])) >= 10
  # The fused head, timed beside the default, computes the same.
  for got, want in zip(step_parts.loss_head_ours(inputs, loss_chunk=8)(),
                       (loss_sum, hits, d_hidden, d_unembed)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_optimizer_sides_agree_over_two_steps():
  inputs = step_parts.optimizer_inputs(CONFIG)
  ours, peer = step_parts.optimizer_ours(CONFIG, inputs), step_parts.optimizer_torch(inputs)
  for _ in range(2):
    ours_params, peer_params = ours(), peer()
  moved = 0.0
  for (_, before, _), a, b in zip(inputs, ours_params, peer_params):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-5, atol=1e-6)
    moved = max(moved, float(np.max(np.abs(np.asarray(a) - before))))
  assert moved > 1e-5  # the step did update the params
