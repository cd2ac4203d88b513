"""The head-to-head systems: which statement each would give a group.

Per group the inputs are the policy's N samples and the members' own opinions, the reward
model's predicted utilities of both for every member, and (only for the hindsight systems,
which are ceilings, not selectors) the judge's ratings. A choice is ("sample", n) or
("opinion", o).

  random_opinion          one member's opinion, drawn at random (the paper's human baseline
                          without any selection)
  best_predicted_opinion  the member opinion with the best predicted (utilitarian) welfare
  best_opinion_hindsight  the member opinion the judge rates best on average (the paper's
                          "best human opinion", chosen with the judge's knowledge)
  sft_sample              one policy sample, drawn at random (SFT without ranking)
  rm_<rule>               best-of-N by the reward model under a welfare rule
  judge_best_of_n         the sample the judge rates best on average: the ceiling of ranking
"""
import dataclasses

import numpy as np

from consensus_jax import welfare

RM_RULES = ("utilitarian", "rawlsian", "nash", "schulze")
SYSTEMS = ("random_opinion", "best_predicted_opinion", "best_opinion_hindsight", "sft_sample",
           *(f"rm_{rule}" for rule in RM_RULES), "judge_best_of_n")


@dataclasses.dataclass
class GroupOutputs:
  """What the pipeline produced for one group (utilities on the 0-1 RM scale)."""
  round_id: str
  samples: list[str]
  sample_valid_N: np.ndarray
  rm_samples_NM: np.ndarray
  rm_opinions_OM: np.ndarray


def rule_winners(utilities_GNM: np.ndarray, member_mask_GM: np.ndarray,
                 valid_GN: np.ndarray, rule: str) -> np.ndarray:
  winner_G, _ = welfare.select(np.asarray(utilities_GNM, np.float32), member_mask_GM, rule,
                               candidate_mask_BN=valid_GN)
  return np.asarray(winner_G)


def _stack(arrays, shape_tail, fill=0.0, dtype=np.float32):
  out = np.full((len(arrays), *shape_tail), fill, dtype)
  for g, a in enumerate(arrays):
    out[(g, *tuple(slice(0, s) for s in a.shape))] = a
  return out


def stacked_samples(groups: list[GroupOutputs]):
  """The groups' sample utilities padded to one batch: (utilities_GNM, member_mask_GM,
  valid_GN), as welfare rules take them."""
  members = max(g.rm_samples_NM.shape[1] for g in groups)
  num_samples = max(g.rm_samples_NM.shape[0] for g in groups)
  mask_GM = _stack([np.ones(g.rm_samples_NM.shape[1], bool) for g in groups], (members,),
                   False, bool)
  samples_GNM = _stack([g.rm_samples_NM for g in groups], (num_samples, members))
  valid_GN = _stack([g.sample_valid_N for g in groups], (num_samples,), False, bool)
  return samples_GNM, mask_GM, valid_GN


def sample_winners(groups: list[GroupOutputs], rule: str) -> np.ndarray:
  """Each group's winning sample under `rule`, by the RM's utilities: winner_G."""
  return rule_winners(*stacked_samples(groups), rule)


def choose(groups: list[GroupOutputs], judged_samples_G: list[np.ndarray],
           judged_opinions_G: list[np.ndarray], seed: int = 0) -> dict[str, list[tuple]]:
  """{system: [(kind, index) per group]}. judged_*: [members, texts] ratings per group."""
  samples_GNM, mask_GM, valid_GN = stacked_samples(groups)
  members = mask_GM.shape[1]
  num_opinions = max(g.rm_opinions_OM.shape[0] for g in groups)
  opinions_GOM = _stack([g.rm_opinions_OM for g in groups], (num_opinions, members))
  opinion_valid_GO = _stack([np.ones(g.rm_opinions_OM.shape[0], bool) for g in groups],
                            (num_opinions,), False, bool)
  rng = np.random.default_rng(seed)
  choices: dict[str, list[tuple]] = {name: [] for name in SYSTEMS}
  best_opinion_G = rule_winners(opinions_GOM, mask_GM, opinion_valid_GO, "utilitarian")
  rm_winners = {rule: rule_winners(samples_GNM, mask_GM, valid_GN, rule) for rule in RM_RULES}
  for g, group in enumerate(groups):
    valid = np.flatnonzero(group.sample_valid_N)
    valid = valid if valid.size else np.arange(len(group.samples))
    choices["random_opinion"].append(("opinion", int(rng.integers(len(judged_opinions_G[g][0])))))
    choices["best_predicted_opinion"].append(("opinion", int(best_opinion_G[g])))
    choices["best_opinion_hindsight"].append(
        ("opinion", int(np.argmax(judged_opinions_G[g].mean(axis=0)))))
    choices["sft_sample"].append(("sample", int(rng.choice(valid))))
    for rule in RM_RULES:
      choices[f"rm_{rule}"].append(("sample", int(rm_winners[rule][g])))
    judged_valid = np.where(group.sample_valid_N, judged_samples_G[g].mean(axis=0), -np.inf)
    choices["judge_best_of_n"].append(("sample", int(np.argmax(judged_valid))))
  return choices
