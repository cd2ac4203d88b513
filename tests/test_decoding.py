"""The KV-cache sampler against full forward passes, distributions, EOS, and sharding."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from consensus_jax import decoding
from consensus_jax.models import decoder, param_layout
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=48, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=48, max_seq_len=64)


@functools.lru_cache(maxsize=None)
def _params(config=CONFIG, seed=0):
  init = jax.jit(lambda k: decoder.Decoder(config).init(k, jnp.zeros((1, 8), jnp.int32)))
  params = nn.meta.unbox(init(jax.random.key(seed))["params"])
  # Sharpen the output so greedy choices are not near-ties.
  params["unembed"] = params["unembed"] * 4.0
  return params


def _sampler(config, cfg):
  return jax.jit(functools.partial(decoding.sample, config, cfg=cfg))


def _prompts():
  return decoding.pad_to_bucket([[5, 9, 13, 2, 7], [11, 3], [4, 4, 8, 20, 31, 6, 9]], (8, 16),
                                CONFIG.max_seq_len)


def _greedy_reference(config, params, prompt, steps):
  forward = jax.jit(lambda p, t: decoder.Decoder(config).apply({"params": p}, t))
  tokens = list(prompt)
  for _ in range(steps):
    tokens.append(int(jnp.argmax(forward(params, jnp.asarray([tokens]))[0, -1])))
  return tokens[len(prompt):]


@pytest.mark.parametrize("scan,decode_layout,cache_chunk",
                         [(True, True, 0), (False, True, 0), (True, False, 0), (True, True, 3)],
                         ids=["scanned", "unrolled", "scanned-decoded-as-scanned",
                              "cache-in-chunks-of-3"])
def test_greedy_with_cache_equals_argmax_of_full_forward(scan, decode_layout, cache_chunk):
  config = CONFIG.replace(scan_layers=scan)
  params = _params()
  if not scan:
    params = param_layout.scanned_to_unrolled(params, config.num_layers)
  cfg = decoding.SamplerConfig(max_new_tokens=10, num_samples=2, temperature=0.0, eos_id=-1,
                               decode_layout=decode_layout, cache_chunk=cache_chunk)
  tokens_BP, lengths_B = _prompts()
  out = _sampler(config, cfg)(params, tokens_BP, lengths_B, jax.random.key(0))
  for row in range(3):
    expected = _greedy_reference(config, params, tokens_BP[row, :lengths_B[row]], 10)
    for n in range(2):
      assert list(np.asarray(out.tokens_BNT[row, n])) == expected
  np.testing.assert_array_equal(out.lengths_BN, 10)


def test_rows_stop_independently_at_eos():
  params = _params()
  tokens_BP, lengths_B = _prompts()
  # Chunks of 5 cache slots: rows stop in different chunks' loops.
  greedy = decoding.SamplerConfig(max_new_tokens=12, num_samples=1, temperature=0.0, eos_id=-1,
                                  cache_chunk=5)
  free = np.asarray(_sampler(CONFIG, greedy)(params, tokens_BP, lengths_B,
                                             jax.random.key(0)).tokens_BNT[:, 0])
  eos = int(free[0, 3])  # Row 0 emits this token at step 3 (maybe earlier too).
  cfg = decoding.SamplerConfig(max_new_tokens=12, num_samples=1, temperature=0.0, eos_id=eos,
                               cache_chunk=5)
  out = _sampler(CONFIG, cfg)(params, tokens_BP, lengths_B, jax.random.key(0))
  for row in range(3):
    hits = np.flatnonzero(free[row] == eos)
    length = hits[0] + 1 if hits.size else 12
    assert int(out.lengths_BN[row, 0]) == length
    np.testing.assert_array_equal(out.tokens_BNT[row, 0, :length], free[row, :length])
    np.testing.assert_array_equal(out.tokens_BNT[row, 0, length:], 0)
  assert len({int(x) for x in out.lengths_BN[:, 0]}) > 1, "rows should stop at different steps"


def test_first_token_frequencies_match_softmax():
  config = CONFIG.replace(vocab_size=12)
  params = _params(config, seed=2)
  params = dict(params, unembed=params["unembed"] / 8.0)  # A spread-out distribution.
  prompt = np.array([[3, 7, 1, 9]], np.int32)
  cfg = decoding.SamplerConfig(max_new_tokens=1, num_samples=4000, temperature=1.0, eos_id=-1)
  out = _sampler(config, cfg)(params, prompt, np.array([4], np.int32), jax.random.key(7))
  counts = np.bincount(np.asarray(out.tokens_BNT[0, :, 0]), minlength=12)
  logits = decoder.Decoder(config).apply({"params": params}, jnp.asarray(prompt))[0, -1]
  probs = np.asarray(jax.nn.softmax(logits), np.float64)
  expected = probs / probs.sum() * counts.sum()  # chisquare wants equal sums to ~1e-8.
  assert expected.min() > 5  # The chi-square approximation needs non-tiny expected counts.
  _, p_value = stats.chisquare(counts, expected)
  assert p_value > 1e-3, (counts, expected)
  # Reported log-probs are the model's.
  np.testing.assert_allclose(out.logprobs_BN[0],
                             np.asarray(jax.nn.log_softmax(logits))[out.tokens_BNT[0, :, 0]],
                             atol=1e-5)


def test_top_k_and_top_p_restrict_the_support():
  config = CONFIG.replace(vocab_size=12)
  params = dict(_params(config, seed=2))
  params["unembed"] = params["unembed"] / 8.0
  prompt, lengths = np.array([[3, 7, 1, 9]], np.int32), np.array([4], np.int32)
  logits = decoder.Decoder(config).apply({"params": params}, jnp.asarray(prompt))[0, -1]
  order = np.argsort(-np.asarray(logits))
  probs = np.asarray(jax.nn.softmax(logits))[order]
  for cfg, allowed in [
      (decoding.SamplerConfig(max_new_tokens=1, num_samples=2000, top_k=3, eos_id=-1),
       set(order[:3])),
      (decoding.SamplerConfig(max_new_tokens=1, num_samples=2000, top_p=0.5, eos_id=-1),
       set(order[:int(np.searchsorted(np.cumsum(probs), 0.5)) + 1]))]:
    out = _sampler(config, cfg)(params, prompt, lengths, jax.random.key(1))
    seen = set(np.asarray(out.tokens_BNT[0, :, 0]).tolist())
    assert seen == allowed


def test_samples_come_sorted_by_logprob():
  params = _params()
  tokens_BP, lengths_B = decoding.pad_to_bucket(
      [[5, 9, 13, 2, 7], [11, 3], [4, 4, 8, 20, 31, 6, 9], [17, 2, 2]], (8,), CONFIG.max_seq_len)
  cfg = decoding.SamplerConfig(max_new_tokens=8, num_samples=4, temperature=1.0, eos_id=3,
                               cache_chunk=3)
  single = _sampler(CONFIG, cfg)(params, tokens_BP, lengths_B, jax.random.key(5))
  assert np.all(np.diff(np.asarray(single.logprobs_BN), axis=1) <= 0)
  assert len(set(np.asarray(single.logprobs_BN).ravel().tolist())) > 4  # not all equal
  # (Sharded sampling against one device: tests/test_programs.py.)


def test_bad_prompts_are_rejected():
  with pytest.raises(ValueError, match="empty prompt"):
    decoding.pad_to_bucket([[1, 2], []], (8,), 64)
  with pytest.raises(ValueError, match="prompt of 9 tokens does not fit"):
    decoding.pad_to_bucket([list(range(9))], (8,), 64)
  with pytest.raises(ValueError, match="exceeds the model's max_seq_len 64"):
    cfg = decoding.SamplerConfig(max_new_tokens=60)
    decoding.sample(CONFIG, _params(), jnp.ones((1, 8), jnp.int32), jnp.array([8]),
                    jax.random.key(0), cfg)
