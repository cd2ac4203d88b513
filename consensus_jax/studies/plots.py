"""The studies' PNG figures (matplotlib, headless)."""
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def win_rate_matrix(result: dict, path: pathlib.Path, title: str) -> None:
  names = result["systems"]
  matrix = np.full((len(names), len(names)), np.nan)
  for i, a in enumerate(names):
    for j, b in enumerate(names):
      if a != b:
        matrix[i, j] = result["win_rate"][a][b]
  fig, ax = plt.subplots(figsize=(8, 7))
  image = ax.imshow(matrix, vmin=0, vmax=1, cmap="RdBu")
  ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
  ax.set_yticks(range(len(names)), names, fontsize=8)
  for i in range(len(names)):
    for j in range(len(names)):
      if i != j:
        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
  ax.set_title(f"{title}: share of groups the row system wins", fontsize=10)
  fig.colorbar(image, ax=ax, fraction=0.046)
  _save(fig, path)


def agreement_heatmaps(examples: Sequence[tuple[str, np.ndarray, np.ndarray]],
                       path: pathlib.Path) -> None:
  """examples: (label, predicted_MN, judged_MN) on the 1-7 scale, member x candidate."""
  fig, axes = plt.subplots(len(examples), 2, figsize=(11, 2.2 * len(examples) + 0.5),
                           squeeze=False)
  for row, (label, predicted, judged) in enumerate(examples):
    for col, (name, values) in enumerate((("predicted (RM)", predicted),
                                          ("judged (population)", judged))):
      ax = axes[row, col]
      ax.imshow(values, vmin=1, vmax=7, cmap="viridis", aspect="auto")
      ax.set_title(f"{label}: {name}", fontsize=9)
      ax.set_xlabel("candidate", fontsize=8)
      ax.set_ylabel("member", fontsize=8)
      ax.set_yticks(range(values.shape[0]))
  _save(fig, path)


def _per_split(split_results: dict[str, dict], width: float):
  """One figure with a panel per split: (figure, [(axes, split, result), ...])."""
  fig, axes = plt.subplots(1, len(split_results), figsize=(width * len(split_results), 4),
                           squeeze=False)
  return fig, [(ax, split, r) for ax, (split, r) in zip(axes[0], split_results.items())]


def _save(fig, path: pathlib.Path) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def exclusion(split_results: dict[str, dict], path: pathlib.Path) -> None:
  fig, panels = _per_split(split_results, 5)
  for ax, split, r in panels:
    labels = ("all opinions", "one left out")
    for who, color in (("left_out_member", "tab:red"), ("included_members", "tab:blue")):
      means = [r[who]["with_all_opinions"], r[who]["opinion_left_out"]]
      ax.errorbar([0, 1], [m["mean"] for m in means],
                  yerr=[[m["mean"] - m["ci_low"] for m in means],
                        [m["ci_high"] - m["mean"] for m in means]],
                  marker="o", capsize=4, color=color, label=who.replace("_", " "))
    ax.set_xticks([0, 1], labels)
    ax.set_ylabel("judged agreement (1-7)")
    e = r["effect"]
    ax.set_title(f"{split}: effect {e['mean']:.2f}, p={e['p_value']:.2g}", fontsize=10)
    ax.legend(fontsize=8)
  _save(fig, path)


def welfare(split_results: dict[str, dict], path: pathlib.Path) -> None:
  fig, panels = _per_split(split_results, 6)
  for ax, split, r in panels:
    rules = r["rules"]
    x = np.arange(len(rules))
    ax.bar(x - 0.2, [r["per_rule"][k]["judged_mean"]["mean"] for k in rules], 0.4,
           label="mean member")
    ax.bar(x + 0.2, [r["per_rule"][k]["judged_worst_off"]["mean"] for k in rules], 0.4,
           label="worst-off member")
    ax.set_xticks(x, rules, rotation=30, fontsize=8)
    ax.set_ylim(1, 7)
    ax.set_ylabel("judged agreement (1-7)")
    ax.set_title(split, fontsize=10)
    ax.legend(fontsize=8)
  _save(fig, path)
