"""Welfare rules compared on the same candidates: how often their winners differ, and what each
does to the worst-off member and to the mean, by the judge (and by the RM's own prediction).
"""
from collections.abc import Sequence

import numpy as np

from consensus_jax.studies import statistics, systems

RULES = ("utilitarian", "rawlsian", "nash", "schulze", "borda", "copeland")


def analyse(outputs: Sequence[systems.GroupOutputs], judged_samples_G: Sequence[np.ndarray],
            rules: Sequence[str] = RULES) -> dict:
  outputs = list(outputs)
  utilities_GNM, mask_GM, valid_GN = systems.stacked_samples(outputs)
  winners = {rule: systems.rule_winners(utilities_GNM, mask_GM, valid_GN, rule)
             for rule in rules}
  differ = {a: {b: float(np.mean(winners[a] != winners[b])) for b in rules if b != a}
            for a in rules}
  per_rule = {}
  for rule in rules:
    judged = [judged_samples_G[g][:, winners[rule][g]] for g in range(len(outputs))]
    predicted = [1 + 6 * utilities_GNM[g, winners[rule][g], mask_GM[g]]
                 for g in range(len(outputs))]
    per_rule[rule] = {
        "judged_mean": statistics.mean_interval(np.array([j.mean() for j in judged])),
        "judged_worst_off": statistics.mean_interval(np.array([j.min() for j in judged])),
        "predicted_mean": float(np.mean([p.mean() for p in predicted])),
        "predicted_worst_off": float(np.mean([p.min() for p in predicted]))}
  return {"groups": len(outputs), "rules": list(rules), "winners_differ": differ,
          "per_rule": per_rule}


def markdown(split_results: dict[str, dict]) -> str:
  lines = ["# Welfare rules", "",
           "Each rule selects from the same RM-scored candidates. Judged: the simulated "
           "population's ratings (1-7) of the winner; predicted: the RM's.", ""]
  for split, r in split_results.items():
    lines += [f"## {split} ({r['groups']} groups)", "",
              "| rule | judged mean | judged worst-off | predicted mean | predicted worst-off | "
              "differs from utilitarian |", "|---|---|---|---|---|---|"]
    for rule in r["rules"]:
      p = r["per_rule"][rule]
      differs = ("-" if rule == "utilitarian" else
                 f"{r['winners_differ']['utilitarian'][rule]:.2f}")
      lines.append(f"| {rule} | {p['judged_mean']['mean']:.2f} | "
                   f"{p['judged_worst_off']['mean']:.2f} | {p['predicted_mean']:.2f} | "
                   f"{p['predicted_worst_off']:.2f} | {differs} |")
    lines.append("")
  return "\n".join(lines)
