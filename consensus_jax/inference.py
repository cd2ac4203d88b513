"""Groups in, consensus statements out: tokenisation around the compiled consensus program.

Input JSONL, one group per line:
  {"id": "g1", "question": "...", "opinions": ["...", "..."]}
  (an opinion may also be {"participant_id": "p1", "text": "..."})
A group needs at least two members and no empty opinion; a prompt longer than the largest
prompt bucket (or than the policy's context minus the new tokens) is an error naming the group.
Member prefixes longer than the RM's prefix length are truncated at the end, as in training.
"""
import dataclasses
import pathlib
from typing import Any, Sequence

import jax
import numpy as np
import seqio

from consensus_jax import consensus, decoding
from consensus_jax.data import jsonl, prompts
from consensus_jax.data.errors import DataError
from consensus_jax.models.config import DecoderConfig


@dataclasses.dataclass(frozen=True)
class Group:
  id: str
  question: str
  participant_ids: tuple[str, ...]
  opinions: tuple[str, ...]


def _string(value: Any, where: str, what: str) -> str:
  # A JSON null or number read as text would be asked as "None" or "3": refuse it instead.
  if not isinstance(value, str):
    raise DataError(f"{where}: {what} must be a string, got {value!r}")
  if not value.strip():
    raise DataError(f"{where}: {what} is empty")
  return value


def _identifier(value: Any, where: str, what: str) -> str:
  """An id as text: a non-empty string, or an integer read as its decimal text."""
  if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
    raise DataError(f"{where}: {what} must be a non-empty string or an integer, got {value!r}")
  return str(value)


def _parse_group(obj: Any, where: str) -> Group:
  if not isinstance(obj, dict):
    raise DataError(f"{where}: a group must be a JSON object")
  for key in ("id", "question", "opinions"):
    if key not in obj:
      raise DataError(f"{where}: missing field {key!r}")
  group_id = _identifier(obj["id"], where, "'id'")
  question = _string(obj["question"], where, f"group {group_id!r}: 'question'")
  opinions = obj["opinions"]
  if not isinstance(opinions, list) or len(opinions) < 2:
    raise DataError(f"{where}: group {group_id!r} has "
                    f"{len(opinions) if isinstance(opinions, list) else 'no'} opinion(s); a "
                    "consensus needs at least two members")
  ids, texts = [], []
  for i, opinion in enumerate(opinions):
    what = f"group {group_id!r}: opinion {i + 1}"
    if isinstance(opinion, dict):
      pid = _identifier(opinion.get("participant_id", f"m{i + 1}"), where,
                        f"{what}: 'participant_id'")
      text = _string(opinion.get("text"), where, f"{what}: 'text'")
    else:
      pid, text = f"m{i + 1}", _string(opinion, where, what)
    ids.append(pid)
    texts.append(text)
  if len(set(ids)) != len(ids):
    raise DataError(f"{where}: group {group_id!r}: duplicate participant ids")
  return Group(group_id, question, tuple(ids), tuple(texts))


def groups_from_rounds(rounds, limit: int) -> list[dict]:
  """The question and opinions of deliberation rounds, as infer's input records."""
  return [{"id": r.id, "question": r.question.text,
           "opinions": [{"participant_id": o.participant_id, "text": o.text} for o in r.opinions]}
          for r in list(rounds)[:limit]]


def read_groups_from_rounds(rounds) -> list[Group]:
  """Deliberation rounds as the groups the runner takes (their question and opinions)."""
  return [Group(r.id, r.question.text, tuple(o.participant_id for o in r.opinions),
                tuple(o.text for o in r.opinions)) for r in rounds]


def read_groups(path: str | pathlib.Path) -> list[Group]:
  """Every group of a JSONL file, validated before any model loads; group ids must be unique
  (outputs are matched to inputs by id)."""
  groups, first_line = [], {}
  if not pathlib.Path(path).is_file():
    raise DataError(f"{path}: no such input file")
  for line_number, obj in jsonl.iter_objects(path):
    where = f"{path}:{line_number}"
    group = _parse_group(obj, where)
    if group.id in first_line:
      raise DataError(f"{where}: duplicate group id {group.id!r} (first on line "
                      f"{first_line[group.id]})")
    first_line[group.id] = line_number
    groups.append(group)
  if not groups:
    raise DataError(f"{path}: no groups")
  return groups


def usable_prompt_buckets(policy_config: DecoderConfig,
                          sampler: decoding.SamplerConfig) -> list[int]:
  """The prompt buckets that leave room for the sampler's new tokens in the policy's context."""
  limit = policy_config.max_seq_len - sampler.max_new_tokens
  return [b for b in sampler.prompt_buckets if b <= limit]


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

  def __post_init__(self):
    self._program = consensus.compile_program(self.policy_config, self.rm_config, self.cfg)

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
    prompt_BP, prompt_lengths_B = self._prompts(groups)
    prefixes_BMQ, prefix_lengths_BM, mask_BM = self._prefixes(groups)
    out = jax.device_get(self._program(self.policy_params, self.rm_params, prompt_BP,
                                       prompt_lengths_B, prefixes_BMQ, prefix_lengths_BM,
                                       mask_BM, rng))
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
