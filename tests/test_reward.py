"""Reward model: where the head reads, the losses by hand, and batched scoring of groups."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax import partitioning
from consensus_jax.models import reward
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=48, max_seq_len=64)


@pytest.fixture(scope="module")
def params():
  model = reward.RewardModel(CONFIG)
  boxed = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  params = nn.meta.unbox(boxed)
  # The head starts at zero (every score 0); give it random weights so positions matter.
  params["score_kernel"] = jax.random.normal(jax.random.key(1), (CONFIG.d_model,))
  params["score_bias"] = jnp.float32(0.3)
  return params


def _scores(params, tokens, segments=None, positions=None):
  apply = jax.jit(lambda p, t, s, pos: reward.RewardModel(CONFIG).apply(
      {"params": p}, t, positions_BL=pos, segment_ids_BL=s))
  return np.asarray(apply(params, jnp.asarray(tokens), segments, positions))


def test_head_reads_last_real_token_under_padding_and_packing(params):
  rng = np.random.RandomState(0)
  a, b = rng.randint(3, 64, 6), rng.randint(3, 64, 4)
  alone_a = _scores(params, a[None])[0, -1]
  alone_b = _scores(params, b[None])[0, -1]
  # Padding: the score at the last real token is the unpadded one.
  padded = np.concatenate([a, np.zeros(5, np.int64)])[None]
  segments = np.array([[1] * 6 + [0] * 5])
  score = _scores(params, padded, segments)
  np.testing.assert_allclose(score[0, reward.last_token_index(segments)[0]], alone_a, atol=1e-5)
  # Packing: two examples in one row, each read at its own last token via score_weights.
  packed = np.concatenate([a, b, [0, 0]])[None]
  segments = np.array([[1] * 6 + [2] * 4 + [0] * 2])
  positions = np.array([list(range(6)) + list(range(4)) + [0, 0]])
  weights = np.zeros((1, 12), np.float32)
  weights[0, 5] = weights[0, 9] = 1.0
  score = _scores(params, packed, segments, positions)
  per_segment, present = reward.segment_scores(jnp.asarray(score), jnp.asarray(weights),
                                               jnp.asarray(segments), max_segments=3)
  np.testing.assert_allclose(per_segment[0, :2], [alone_a, alone_b], atol=1e-5)
  np.testing.assert_array_equal(present[0], [True, True, False])


def _sigmoid(x):
  return 1 / (1 + math.exp(-x))


def test_regression_loss_by_hand():
  score = jnp.array([[0.0, 2.0, -1.0, 0.5]])
  targets = jnp.array([[0.0, 5 / 6, 0.0, 1 / 6]])
  weights = jnp.array([[0.0, 1.0, 0.0, 1.0]])
  expected = ((_sigmoid(2.0) - 5 / 6) ** 2 + (_sigmoid(0.5) - 1 / 6) ** 2) / 2
  assert float(reward.regression_loss(score, targets, weights)) == pytest.approx(expected,
                                                                                 rel=1e-6)


def test_binary_cross_entropy_by_hand():
  score = jnp.array([[1.5, -0.5, 0.7]])
  targets = jnp.array([[1.0, 0.0, 0.5]])
  weights = jnp.array([[1.0, 1.0, 0.5]])  # A pass vote at half weight.
  terms = [-math.log(_sigmoid(1.5)), -math.log(1 - _sigmoid(-0.5)),
           -(0.5 * math.log(_sigmoid(0.7)) + 0.5 * math.log(1 - _sigmoid(0.7)))]
  expected = (terms[0] + terms[1] + 0.5 * terms[2]) / 2.5
  assert float(reward.binary_cross_entropy_loss(score, targets, weights)) == pytest.approx(
      expected, rel=1e-6)


def test_bradley_terry_by_hand():
  # Row 0 packs two pairs (segments 1, 2); row 1 has one pair; scores read where weights are 1.
  chosen = jnp.array([[9.0, 2.0, 9.0, 1.0], [9.0, 0.5, 0.0, 0.0]])
  chosen_w = jnp.array([[0, 1, 0, 1], [0, 1, 0, 0]], jnp.float32)
  chosen_seg = jnp.array([[1, 1, 2, 2], [1, 1, 0, 0]])
  rejected = jnp.array([[9.0, 1.0, -1.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
  rejected_w = jnp.array([[1, 0, 0, 1], [1, 0, 0, 0]], jnp.float32)
  rejected_seg = jnp.array([[1, 2, 2, 2], [1, 0, 0, 0]])
  loss, accuracy = reward.bradley_terry_loss(chosen, chosen_w, chosen_seg, rejected, rejected_w,
                                             rejected_seg, max_segments=2)
  margins = [2.0 - 9.0, 1.0 - 0.0, 0.5 - 3.0]
  expected = sum(-math.log(_sigmoid(m)) for m in margins) / 3
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(accuracy) == pytest.approx(1 / 3)


def test_scoring_api_equals_one_by_one(params):
  rng = np.random.RandomState(3)
  batch, members, candidates, prefix_len, cand_len = 2, 3, 4, 7, 5
  prefix_lengths = rng.randint(2, prefix_len + 1, (batch, members))
  candidate_lengths = rng.randint(1, cand_len + 1, (batch, candidates))
  prefixes = rng.randint(3, 64, (batch, members, prefix_len))
  cands = rng.randint(3, 64, (batch, candidates, cand_len))
  prefixes[np.arange(prefix_len) >= prefix_lengths[..., None]] = 0
  cands[np.arange(cand_len) >= candidate_lengths[..., None]] = 0
  mesh = partitioning.make_mesh(data=2, tensor=4)
  score = jax.jit(lambda p, *a: reward.score_groups(CONFIG, p, *a, chunk_size=10))
  with jax.set_mesh(mesh):
    utilities = np.asarray(score(params, prefixes, prefix_lengths, cands, candidate_lengths))
  assert utilities.shape == (batch, candidates, members)
  unchunked = jax.jit(lambda p, *a: reward.score_groups(CONFIG, p, *a))(
      params, prefixes, prefix_lengths, cands, candidate_lengths)
  np.testing.assert_allclose(unchunked, utilities, atol=1e-6)
  for b in range(batch):
    for n in range(candidates):
      for m in range(members):
        sequence = np.concatenate([prefixes[b, m, :prefix_lengths[b, m]],
                                   cands[b, n, :candidate_lengths[b, n]]])
        expected = _sigmoid(float(_scores(params, sequence[None])[0, -1]))
        assert utilities[b, n, m] == pytest.approx(expected, abs=1e-5), (b, n, m)
