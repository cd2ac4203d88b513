"""The compiled consensus program against its steps run one by one on the host."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax import consensus, decoding, partitioning, programs, serving
from consensus_jax.models import decoder, reward
from consensus_jax.models.config import DecoderConfig

from tests.conftest import init_params

POLICY = DecoderConfig(vocab_size=40, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=48, max_seq_len=64)
RM = DecoderConfig(vocab_size=40, num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                   mlp_dim=48, max_seq_len=64)
EOS, HEAD = 1, (7, 8)


@pytest.fixture(scope="module")
def params():
  policy = init_params(decoder.Decoder(POLICY), 0)
  rm = init_params(reward.RewardModel(RM), 1)
  rm["score_kernel"] = jax.random.normal(jax.random.key(2), (RM.d_model,))
  return policy, rm


def _host_utility(rm_params, prefix, candidate):
  sequence = jnp.asarray([list(prefix) + list(candidate)])
  score = reward.RewardModel(RM).apply({"params": rm_params}, sequence)[0, -1]
  return float(jax.nn.sigmoid(score))


@pytest.mark.parametrize("rule", ["utilitarian", "rawlsian"])
def test_compiled_program_equals_steps_on_host(params, rule):
  policy_params, rm_params = params
  prompts_BP, prompt_lengths_B = decoding.pad_to_bucket([[5, 9, 13, 2], [11, 3, 30]], (8,), 64)
  member_lists = [[[12, 13, 14], [15, 16], [17, 18, 19, 20]], [[21, 22], [23, 24, 25]]]
  prefixes_BMQ = np.zeros((2, 3, 6), np.int32)
  prefix_lengths_BM = np.ones((2, 3), np.int32)
  mask_BM = np.zeros((2, 3), bool)
  for b, members in enumerate(member_lists):
    for m, tokens in enumerate(members):
      prefixes_BMQ[b, m, :len(tokens)] = tokens
      prefix_lengths_BM[b, m] = len(tokens)
      mask_BM[b, m] = True
  sampler = decoding.SamplerConfig(max_new_tokens=6, num_samples=5, temperature=1.0,
                                   eos_id=EOS)
  cfg = consensus.ConsensusConfig(sampler=sampler, statement_head_ids=HEAD, rule=rule)
  mesh = partitioning.single_device_mesh()
  serving_config, served = serving.serve_policy(POLICY, policy_params, sampler, mesh)
  program = programs.consensus_program(serving_config, RM, cfg, mesh)
  out = program(served, rm_params, prompts_BP, prompt_lengths_B, prefixes_BMQ,
                prefix_lengths_BM, mask_BM, jax.random.key(4))

  samples = jax.jit(lambda *a: decoding.sample(POLICY, *a, sampler))(
      policy_params, prompts_BP, prompt_lengths_B, jax.random.key(4))
  np.testing.assert_array_equal(out.candidate_tokens_BNT, samples.tokens_BNT)
  for b, members in enumerate(member_lists):
    welfare = []
    for n in range(5):
      generated = [int(t) for t in samples.tokens_BNT[b, n, :samples.lengths_BN[b, n]]]
      valid = bool(generated) and generated != [EOS]
      assert bool(out.candidate_valid_BN[b, n]) == valid
      candidate = list(HEAD) + generated + ([] if generated[-1:] == [EOS] else [EOS])
      utilities = [_host_utility(rm_params, tokens, candidate) for tokens in members]
      np.testing.assert_allclose(out.utilities_BNM[b, n, :len(members)], utilities, atol=1e-5)
      value = np.mean(utilities) if rule == "utilitarian" else np.min(utilities)
      welfare.append(value if valid else -np.inf)
    assert int(out.winner_B[b]) == int(np.argmax(welfare))
    np.testing.assert_allclose(np.asarray(out.welfare_BN[b]), welfare, atol=1e-5)


def test_unknown_rule_is_rejected():
  with pytest.raises(ValueError, match="welfare rule 'median' does not exist"):
    consensus.ConsensusConfig(sampler=decoding.SamplerConfig(), statement_head_ids=HEAD,
                              rule="median")
