"""Exclusion: is a member whose opinion was left out of a statement's construction served worse?

For each group one member m is left out: the policy writes candidates from the other opinions
and the RM selects (utilitarian) for the other members only. The same group's statement built
from all opinions is the control. With J the judge's ratings:
  gap(S)  = mean over included members o of J(o, S) - J(m, S)
  effect  = gap(S without m) - gap(S with everyone)
A positive effect means leaving m out costs m more than it costs the others. Its mean over
groups, 95% t interval and two-sided p-value are reported, with the left-out and the included
members' agreement under both statements.
"""
import numpy as np

from consensus_jax.studies import statistics


def analyse(judged_all_GM: np.ndarray, judged_without_GM: np.ndarray, left_out_G: np.ndarray,
            member_mask_GM: np.ndarray) -> dict:
  """judged_*_GM: each member's judged agreement with the statement built from all opinions
  and with the one built without member left_out_G[g]; member_mask_GM marks real members."""
  judged_all_GM = np.asarray(judged_all_GM, np.float64)
  judged_without_GM = np.asarray(judged_without_GM, np.float64)
  groups = np.arange(judged_all_GM.shape[0])
  excluded_GM = np.zeros_like(member_mask_GM, bool)
  excluded_GM[groups, left_out_G] = True
  included_GM = member_mask_GM.astype(bool) & ~excluded_GM

  def parts(judged_GM):
    left = judged_GM[groups, left_out_G]
    others = np.sum(np.where(included_GM, judged_GM, 0.0), axis=1) / included_GM.sum(axis=1)
    return left, others

  left_all, others_all = parts(judged_all_GM)
  left_without, others_without = parts(judged_without_GM)
  effect_G = (others_without - left_without) - (others_all - left_all)
  return {
      "groups": int(groups.size),
      "effect": statistics.paired_effect(effect_G),
      "left_out_member": {"with_all_opinions": statistics.mean_interval(left_all),
                          "opinion_left_out": statistics.mean_interval(left_without),
                          "change": statistics.paired_effect(left_without - left_all)},
      "included_members": {"with_all_opinions": statistics.mean_interval(others_all),
                           "opinion_left_out": statistics.mean_interval(others_without),
                           "change": statistics.paired_effect(others_without - others_all)},
  }


def markdown(split_results: dict[str, dict]) -> str:
  lines = ["# Exclusion", "",
           "effect = (included members' - left-out member's judged agreement) with the statement "
           "built without the left-out member's opinion, minus the same gap for the statement "
           "built from all opinions. Positive: leaving a member out costs that member more.", "",
           "| split | groups | effect [95% CI] | p | left-out member: all -> without | "
           "included members: all -> without |", "|---|---|---|---|---|---|"]
  for split, r in split_results.items():
    e, left, inc = r["effect"], r["left_out_member"], r["included_members"]
    lines.append(
        f"| {split} | {r['groups']} | {e['mean']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}] "
        f"| {e['p_value']:.2g} | {left['with_all_opinions']['mean']:.2f} -> "
        f"{left['opinion_left_out']['mean']:.2f} | {inc['with_all_opinions']['mean']:.2f} -> "
        f"{inc['opinion_left_out']['mean']:.2f} |")
  return "\n".join(lines) + "\n"
