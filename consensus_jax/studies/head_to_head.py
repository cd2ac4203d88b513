"""Head-to-head: how often each system's statement is preferred over another's, judged.

For every group, every system (studies.systems) picks one statement; each judge rates it for
every member (1-7). System A beats B in a group when the members' mean judged agreement with
A's statement is higher (a tie counts half). Reported per judge: the pairwise win-rate matrix
with Wilson 95% intervals, the mean agreement and the worst-off member's agreement per system
(with 95% t intervals), over the groups of the split, and how well the RM orders the policy's
samples for each member by the judge (its pairwise accuracy on the samples it selects among).
"""
from collections.abc import Sequence

import numpy as np

from consensus_jax import rm_metrics
from consensus_jax.data import records
from consensus_jax.studies import judges as judges_lib
from consensus_jax.studies import statistics, systems


def judged_texts(judge: judges_lib.SimulatedJudge, rounds: Sequence[records.Round],
                 outputs: Sequence[systems.GroupOutputs]):
  """Per group: judged ratings [members, samples] and [members, opinions]."""
  samples, opinions = [], []
  for round_, out in zip(rounds, outputs):
    samples.append(judge.rate(round_, out.samples))
    opinions.append(judge.rate(round_, [o.text for o in round_.opinions]))
  return samples, opinions


def chosen_ratings(choices: dict[str, list[tuple]], judged_samples, judged_opinions):
  """{system: [ratings of every member for its statement, per group]}."""
  out = {}
  for name, picks in choices.items():
    out[name] = [(judged_samples[g] if kind == "sample" else judged_opinions[g])[:, index]
                 for g, (kind, index) in enumerate(picks)]
  return out


def rm_ranking_of_samples(outputs: Sequence[systems.GroupOutputs],
                          judged_samples) -> dict[str, float]:
  """How well the RM orders each member's view of the policy's samples, by the judge: the
  within-member pairwise accuracy of predicted against judged agreement over valid samples."""
  correct = total = 0.0
  for out, judged_MN in zip(outputs, judged_samples):
    valid = np.flatnonzero(out.sample_valid_N)
    c, t = rm_metrics.pairwise_accuracy(out.rm_samples_NM[valid], judged_MN[:, valid].T,
                                        np.ones((valid.size, judged_MN.shape[0]), bool))
    correct, total = correct + c, total + t
  return {"pairwise_accuracy": correct / max(total, 1), "pairs": int(total)}


def summarize(ratings: dict[str, list[np.ndarray]]) -> dict:
  names = list(ratings)
  mean_SG = np.array([[r.mean() for r in ratings[name]] for name in names])
  worst_SG = np.array([[r.min() for r in ratings[name]] for name in names])
  win_rate, win_rate_ci = statistics.win_rate_matrix(mean_SG, names)
  return {"systems": names, "win_rate": win_rate, "win_rate_ci": win_rate_ci,
          "mean_agreement": {n: statistics.mean_interval(mean_SG[i]) for i, n in
                             enumerate(names)},
          "worst_member_agreement": {n: statistics.mean_interval(worst_SG[i]) for i, n in
                                     enumerate(names)},
          "groups": int(mean_SG.shape[1])}


def run(rounds: Sequence[records.Round], outputs: Sequence[systems.GroupOutputs],
        judges: Sequence[judges_lib.SimulatedJudge] = judges_lib.JUDGES, seed: int = 0) -> dict:
  """The split's result under the first judge, with the others under "robustness"."""
  result, examples = None, None
  for judge in judges:
    judged_samples, judged_opinions = judged_texts(judge, rounds, outputs)
    choices = systems.choose(list(outputs), judged_samples, judged_opinions, seed)
    summary = summarize(chosen_ratings(choices, judged_samples, judged_opinions))
    summary["judge"] = judge.name
    summary["rm_ranking_of_samples"] = rm_ranking_of_samples(outputs, judged_samples)
    if result is None:
      result, examples = summary, (choices, judged_samples)
      result["robustness"] = {}
    else:
      result["robustness"][judge.name] = summary
  return result, examples


def markdown(split_results: dict[str, dict], focus: str = "rm_utilitarian") -> str:
  lines = ["# Head-to-head", "",
           "Share of groups in which the row system's statement is preferred (members' mean "
           "judged agreement; ties half), with Wilson 95% intervals. Judge: the simulated "
           "population the selector never saw; `robustness` repeats it with a perturbed "
           "population.", ""]
  for split, result in split_results.items():
    for judge_name, summary in [(result["judge"], result),
                                *result.get("robustness", {}).items()]:
      lines += [f"## {split}, judge {judge_name} ({summary['groups']} groups)", "",
                f"| system | mean agreement (1-7) | worst-off member | {focus} wins vs it |",
                "|---|---|---|---|"]
      for name in summary["systems"]:
        mean = summary["mean_agreement"][name]
        worst = summary["worst_member_agreement"][name]
        if name == focus:
          wins = "-"
        else:
          low, high = summary["win_rate_ci"][focus][name]
          wins = f"{summary['win_rate'][focus][name]:.2f} [{low:.2f}, {high:.2f}]"
        lines.append(f"| {name} | {mean['mean']:.2f} [{mean['ci_low']:.2f}, "
                     f"{mean['ci_high']:.2f}] | {worst['mean']:.2f} | {wins} |")
      ranking = summary["rm_ranking_of_samples"]
      lines += ["", f"The RM orders each member's view of the policy's samples as this judge does "
                    f"in {ranking['pairwise_accuracy']:.2f} of {ranking['pairs']} pairs "
                    "(chance 0.5).", ""]
  return "\n".join(lines)


def examples_text(rounds, outputs, choices, judged_samples, count: int,
                  system: str = "rm_utilitarian") -> str:
  """Groups with the system's statement and each member's predicted and judged agreement."""
  lines = []
  for g in range(min(count, len(rounds))):
    round_, out = rounds[g], outputs[g]
    _, n = choices[system][g]
    lines += ["", f"=== group {round_.id}: {round_.question.text}"]
    lines += [f"  {o.participant_id}: {o.text}" for o in round_.opinions]
    lines.append(f"  CONSENSUS ({system}): {out.samples[n]}")
    lines.append("  member     predicted  judged   (agreement, 1-7)")
    for m, opinion in enumerate(round_.opinions):
      lines.append(f"  {opinion.participant_id:<10} {1 + 6 * out.rm_samples_NM[n, m]:9.2f} "
                   f"{judged_samples[g][m, n]:7.0f}")
  return "\n".join(lines)


def summary_line(split: str, result: dict, system: str = "rm_utilitarian") -> str:
  """One line: how often the system beats the best predicted opinion and one SFT sample."""
  parts = []
  for other in ("best_predicted_opinion", "sft_sample", "best_opinion_hindsight"):
    low, high = result["win_rate_ci"][system][other]
    parts.append(f"{other} {result['win_rate'][system][other]:.0%} [{low:.0%}, {high:.0%}]")
  mean = result["mean_agreement"]
  return (f"head-to-head on {split} ({result['groups']} groups, judged by the simulated "
          f"population): {system} wins vs " + ", ".join(parts) +
          f"; mean judged agreement {mean[system]['mean']:.2f} vs one sample "
          f"{mean['sft_sample']['mean']:.2f}, judge's best of N "
          f"{mean['judge_best_of_n']['mean']:.2f}")
