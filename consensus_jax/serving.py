"""Serving: models loaded onto the mesh, groups in, consensus statements out.

Params are restored from orbax straight onto the mesh with the shardings of the rule table (no
host copy) and the policy is converted to the layout the sampler decodes in once, at load
(`programs.to_serving_layout`). `ConsensusRunner` frames groups into ids (data.prompts), pads
the batch to the mesh's batch shards, runs the compiled consensus program (programs.py) and
turns ids back into text. A prompt longer than the largest prompt bucket (or than the policy's
context minus the new tokens) is an error naming the group; member prefixes longer than the
RM's prefix length are truncated at the end, as in training. Groups are read by data.groups.
"""
import dataclasses
import pathlib
from typing import Any, Optional, Sequence

import jax
import numpy as np
import seqio
from jax.sharding import Mesh

from consensus_jax import checkpointing, consensus, decoding, partitioning, programs
from consensus_jax.data import prompts
from consensus_jax.data.errors import DataError
from consensus_jax.data.groups import Group
from consensus_jax.models import params as params_lib
from consensus_jax.models import reward
from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder


def load_params(model_dir: str | pathlib.Path, config: DecoderConfig, mesh: Mesh,
                model_cls=None, step: Optional[int] = None) -> tuple[Any, int]:
  """(params, step): a run's latest checkpoint (or `step`) restored onto the mesh, each param
  with its sharding from the rule table."""
  model_cls = model_cls or Decoder
  abstract = params_lib.abstract_params(config, model_cls)
  shardings = params_lib.param_shardings(config, mesh, model_cls)
  return checkpointing.load_latest_params(
      model_dir, checkpointing.abstract_with_shardings(abstract, shardings), step)


def load_reward_model(rm_dir: str | pathlib.Path, config: DecoderConfig, mesh: Mesh,
                      step: Optional[int] = None) -> tuple[Any, int]:
  return load_params(rm_dir, config, mesh, reward.RewardModel, step)


def serve_policy(config: DecoderConfig, params: Any, sampler: decoding.SamplerConfig,
                 mesh: Mesh) -> tuple[DecoderConfig, Any]:
  """Policy params (checkpoint layout, anywhere) on the mesh in the layout the sampler decodes
  in; a no-op placement for params already restored onto the mesh."""
  params = jax.device_put(params, programs.policy_shardings(config, mesh))
  serving_config, convert = programs.to_serving_layout(config, sampler, mesh)
  return serving_config, params if convert is None else convert(params)


def greedy_continuations(config: DecoderConfig, params: Any,
                         prompt_ids: Sequence[Sequence[int]], eos_id: int,
                         max_new_tokens: int = 64, mesh: Optional[Mesh] = None) -> list[list[int]]:
  """The argmax continuation of each prompt (ids, start token included), EOS dropped: the
  sampler at temperature 0, for quick looks at a policy (launch/sft_demo.py)."""
  mesh = partitioning.single_device_mesh() if mesh is None else mesh
  longest = max(len(ids) for ids in prompt_ids)
  sampler = decoding.SamplerConfig(max_new_tokens=max_new_tokens, num_samples=1,
                                   temperature=0.0, eos_id=eos_id, prompt_buckets=(longest,))
  serving_config, params = serve_policy(config, params, sampler, mesh)
  tokens_BP, lengths_B = decoding.pad_to_bucket(prompt_ids, sampler.prompt_buckets,
                                                config.max_seq_len)
  samples = programs.sampler(serving_config, sampler, mesh).run_on_host_batch(
      (params,), (tokens_BP, lengths_B), (jax.random.key(0),))
  return [[int(t) for t in samples.tokens_BNT[b, 0, :samples.lengths_BN[b, 0]] if t != eos_id]
          for b in range(len(prompt_ids))]


def usable_prompt_buckets(policy_config: DecoderConfig,
                          sampler: decoding.SamplerConfig) -> list[int]:
  """The prompt buckets that leave room for the sampler's new tokens in the policy's context."""
  limit = policy_config.max_seq_len - sampler.max_new_tokens
  return [b for b in sampler.prompt_buckets if b <= limit]


def prompt_fits(vocabulary: seqio.Vocabulary, question: str, opinions: Sequence[str],
                policy_config: DecoderConfig, sampler: decoding.SamplerConfig) -> bool:
  """Whether the group's policy prompt fits a usable prompt bucket (policy_prompt_batch
  refuses one that does not)."""
  largest = max(usable_prompt_buckets(policy_config, sampler), default=0)
  return len(prompts.policy_prompt_ids(vocabulary, question, opinions)) <= largest


def policy_prompt_batch(vocabulary: seqio.Vocabulary, groups: Sequence[Group],
                        policy_config: DecoderConfig, sampler: decoding.SamplerConfig):
  """The groups' policy prompts as the sampler takes them: (tokens_BP, lengths_B), right-padded
  to a prompt bucket. Ids come from prompts.policy_prompt_ids, the framing SFT trained on."""
  ids = [prompts.policy_prompt_ids(vocabulary, g.question, g.opinions) for g in groups]
  limit = policy_config.max_seq_len - sampler.max_new_tokens
  buckets = usable_prompt_buckets(policy_config, sampler)
  if not buckets:
    raise ValueError(f"no prompt bucket of {sampler.prompt_buckets} leaves room for "
                     f"{sampler.max_new_tokens} new tokens within max_seq_len "
                     f"{policy_config.max_seq_len}")
  for group, tokens in zip(groups, ids):
    if len(tokens) > max(buckets):
      raise DataError(f"group {group.id!r}: its prompt is {len(tokens)} tokens, longer than "
                      f"the largest usable prompt bucket {max(buckets)} (max_seq_len "
                      f"{policy_config.max_seq_len} - max_new_tokens "
                      f"{sampler.max_new_tokens} = {limit})")
  return decoding.pad_to_bucket(ids, buckets, policy_config.max_seq_len)


def candidate_texts(vocabulary: seqio.Vocabulary, tokens_BNT: np.ndarray, lengths_BN: np.ndarray,
                    eos_id: int) -> list[list[str]]:
  """Sampled ids (host arrays, EOS included in the lengths) as text, [B][N]."""
  texts = []
  for b in range(tokens_BNT.shape[0]):
    texts.append([])
    for n in range(tokens_BNT.shape[1]):
      tokens = tokens_BNT[b, n, :lengths_BN[b, n]].tolist()
      texts[-1].append(vocabulary.decode([t for t in tokens if t != eos_id]))
  return texts


@dataclasses.dataclass
class ConsensusRunner:
  policy_config: DecoderConfig
  policy_params: Any
  rm_config: DecoderConfig
  rm_params: Any
  vocabulary: seqio.Vocabulary
  cfg: consensus.ConsensusConfig
  rm_prefix_length: int = 128
  rm_candidate_length: int = 96
  mesh: Optional[Mesh] = None  # None: one device.

  def __post_init__(self):
    """Places both models on the mesh (the policy in its serving layout) and compiles."""
    self.mesh = partitioning.single_device_mesh() if self.mesh is None else self.mesh
    serving_config, self.policy_params = serve_policy(self.policy_config, self.policy_params,
                                                      self.cfg.sampler, self.mesh)
    self.rm_params = jax.device_put(self.rm_params,
                                    programs.reward_shardings(self.rm_config, self.mesh))
    self._program = programs.consensus_program(serving_config, self.rm_config, self.cfg,
                                               self.mesh)

  def _prompts(self, groups: Sequence[Group]):
    return policy_prompt_batch(self.vocabulary, groups, self.policy_config, self.cfg.sampler)

  def _prefixes(self, groups: Sequence[Group]):
    members = max(len(g.opinions) for g in groups)
    prefixes_BMQ = np.zeros((len(groups), members, self.rm_prefix_length), np.int32)
    lengths_BM = np.ones((len(groups), members), np.int32)
    mask_BM = np.zeros((len(groups), members), bool)
    for b, group in enumerate(groups):
      for m, opinion in enumerate(group.opinions):
        ids = prompts.rm_member_ids(self.vocabulary, group.question, opinion,
                                    self.rm_prefix_length)
        prefixes_BMQ[b, m, :len(ids)], lengths_BM[b, m], mask_BM[b, m] = ids, len(ids), True
    return prefixes_BMQ, lengths_BM, mask_BM

  def run_arrays(self, groups: Sequence[Group], rng: jax.Array):
    """The program's outputs as host arrays, and each group's candidates as text [B][N]."""
    out = self._program.run_on_host_batch(
        (self.policy_params, self.rm_params),
        (*self._prompts(groups), *self._prefixes(groups)), (rng,))
    return out, candidate_texts(self.vocabulary, out.candidate_tokens_BNT,
                                out.candidate_lengths_BN, self.cfg.sampler.eos_id)

  def run(self, groups: Sequence[Group], rng: jax.Array) -> list[dict]:
    out, texts = self.run_arrays(groups, rng)
    results = []
    for b, group in enumerate(groups):
      candidates = []
      for n in range(out.candidate_tokens_BNT.shape[1]):
        candidates.append({
            "text": texts[b][n],
            "valid": bool(out.candidate_valid_BN[b, n]),
            "welfare": float(out.welfare_BN[b, n]),
            "log_prob": float(out.candidate_logprobs_BN[b, n]),
            "predicted_agreement": {
                pid: round(1.0 + 6.0 * float(out.utilities_BNM[b, n, m]), 3)
                for m, pid in enumerate(group.participant_ids)}})
      winner = int(out.winner_B[b])
      results.append({"id": group.id, "question": group.question, "rule": self.cfg.rule,
                      "statement": candidates[winner]["text"], "winner_index": winner,
                      "opinions": dict(zip(group.participant_ids, group.opinions)),
                      "candidates": candidates})
    return results


def agreement_table(result: dict) -> str:
  """A console table: members x (the chosen statement and the runner-up candidates)."""
  order = sorted(range(len(result["candidates"])),
                 key=lambda n: -result["candidates"][n]["welfare"])[:4]
  members = list(result["opinions"])
  header = "candidate".ljust(12) + "welfare".rjust(9) + "".join(m[:8].rjust(9) for m in members)
  lines = [header]
  for n in order:
    c = result["candidates"][n]
    tag = "* chosen" if n == result["winner_index"] else f"  #{n}"
    lines.append(tag.ljust(12) + f"{c['welfare']:9.3f}" +
                 "".join(f"{c['predicted_agreement'][m]:9.2f}" for m in members))
  return "\n".join(lines)
