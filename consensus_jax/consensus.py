"""Sample -> score -> aggregate -> select, as one compiled program.

For each group: the SFT policy samples N candidate statements from the group's prompt; the RM
inputs are built on device from the generated tokens (the RM's statement head, e.g. the ids of
"Statement:", then the candidate's tokens, ending in EOS: the same ids the RM tasks train on);
the reward model scores every (candidate, member) pair; a welfare rule aggregates each
candidate's member utilities; the best valid candidate wins. Nothing is detokenised in between.

A sample that ran out of `max_new_tokens` before EOS gets an EOS appended for scoring; a sample
that is empty (EOS first) is not a valid candidate and never wins.
"""
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from consensus_jax import decoding, welfare
from consensus_jax.models import reward
from consensus_jax.models.config import DecoderConfig


@dataclasses.dataclass(frozen=True)
class ConsensusConfig:
  sampler: decoding.SamplerConfig
  statement_head_ids: tuple[int, ...]  # Token ids the RM suffix starts with.
  rule: str = "utilitarian"
  rule_params: tuple[tuple[str, Any], ...] = ()
  rm_chunk_size: int | None = None

  def __post_init__(self):
    if self.rule not in welfare.RULES:
      raise ValueError(f"ConsensusConfig: welfare rule {self.rule!r} does not exist; "
                       f"choose one of {welfare.RULES}")


class ConsensusOutput(NamedTuple):
  winner_B: jax.Array
  candidate_tokens_BNT: jax.Array
  candidate_lengths_BN: jax.Array
  candidate_logprobs_BN: jax.Array
  candidate_valid_BN: jax.Array
  utilities_BNM: jax.Array
  welfare_BN: jax.Array


def rm_candidates(head_ids, generated_BNT, lengths_BN, eos_id: int):
  """Statement head + generated tokens (+ EOS when the sample was cut off), right-padded."""
  batch, num, gen_len = generated_BNT.shape
  ended_BN = jnp.take_along_axis(generated_BNT, jnp.maximum(lengths_BN - 1, 0)[..., None],
                                 axis=-1)[..., 0] == eos_id
  slots_T = jnp.arange(gen_len + 1)
  with_eos_BNT = jnp.where(slots_T == lengths_BN[..., None], eos_id,
                           jnp.pad(generated_BNT, ((0, 0), (0, 0), (0, 1))))
  body_lengths_BN = jnp.where(ended_BN & (lengths_BN > 0), lengths_BN, lengths_BN + 1)
  head = jnp.asarray(head_ids, jnp.int32)
  build = jax.vmap(jax.vmap(reward.concat_prefix_candidate, (None, None, 0, 0)),
                   (None, None, 0, 0))
  tokens_BNC, segments_BNC = build(head, len(head_ids), with_eos_BNT, body_lengths_BN)
  return tokens_BNC, jnp.sum(segments_BNC, axis=-1)


def run(policy_config: DecoderConfig, rm_config: DecoderConfig, cfg: ConsensusConfig,
        policy_params, rm_params, prompt_tokens_BP, prompt_lengths_B, member_prefixes_BMQ,
        member_prefix_lengths_BM, member_mask_BM, rng) -> ConsensusOutput:
  """The whole pipeline; programs.consensus_program compiles it on a mesh."""
  samples = decoding.sample(policy_config, policy_params, prompt_tokens_BP, prompt_lengths_B,
                            rng, cfg.sampler)
  valid_BN = (samples.lengths_BN > 1) | (
      (samples.lengths_BN == 1) & (samples.tokens_BNT[..., 0] != cfg.sampler.eos_id))
  candidates_BNC, candidate_lengths_BN = rm_candidates(
      cfg.statement_head_ids, samples.tokens_BNT, samples.lengths_BN, cfg.sampler.eos_id)
  utilities_BNM = reward.score_groups(rm_config, rm_params, member_prefixes_BMQ,
                                      member_prefix_lengths_BM, candidates_BNC,
                                      candidate_lengths_BN, chunk_size=cfg.rm_chunk_size)
  winner_B, welfare_BN = welfare.select(utilities_BNM, member_mask_BM, cfg.rule,
                                        candidate_mask_BN=valid_BN, **dict(cfg.rule_params))
  return ConsensusOutput(winner_B, samples.tokens_BNT, samples.lengths_BN, samples.logprobs_BN,
                         valid_BN, utilities_BNM, welfare_BN)
