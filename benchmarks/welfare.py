"""Jitted welfare selection vs a per-group numpy loop, for every rule.

4096 groups x 16 candidates x 5 member slots (uniform random utilities in [1, 7], 3..5 present
members per group). For each rule: the jitted `welfare.select` (block_until_ready) against a
Python loop over groups that runs the same algorithm in plain numpy per group (measured on a
subset of groups and scaled linearly to the full batch; the output says so), each by min /
median / spread, and the ratio of medians and of minimums (benchmarks/timing: warm-up until runs
agree, alternating rounds, flagged when unsteady). The two are checked to pick the same winners
first.

  python -m benchmarks.welfare [--groups=4096] [--numpy_groups=256] [--rounds=3 --repeats=5]
"""
import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common, timing  # noqa: E402
from consensus_jax import welfare  # noqa: E402

NUM_CANDIDATES, NUM_MEMBERS = 16, 5
LOWER_BOUND, OFFSET = 0.0, 1e-6  # the module's defaults, spelled out for the references
RULES = [
    ("utilitarian", {}),
    ("rawlsian", {}),
    ("nash", {}),
    ("isoelastic", {"epsilon": 2.0}),
    ("power_mean", {"p": 0.5}),
    ("gini", {}),
    ("borda", {}),
    ("copeland", {}),
    ("schulze", {}),
]


# Per-group numpy references: x_NM holds one group's utilities of its present members only.


def _power_mean(x_NM, p):
  shifted = np.maximum(x_NM - LOWER_BOUND, 0) + OFFSET
  if p == 0:
    return np.exp(np.log(shifted).mean(1)) + LOWER_BOUND - OFFSET
  return (shifted ** p).mean(1) ** (1 / p) + LOWER_BOUND - OFFSET


def _pairwise(x_NM):
  return (x_NM[:, None, :] > x_NM[None, :, :]).sum(-1)


def numpy_welfare(x_NM, rule, params):
  n = x_NM.shape[1]
  if rule == "utilitarian":
    return x_NM.mean(1)
  if rule == "rawlsian":
    return x_NM.min(1)
  if rule == "nash":
    return np.log(np.maximum(x_NM - LOWER_BOUND, 0) + OFFSET).mean(1)
  if rule == "isoelastic":
    return _power_mean(x_NM, 1 - params["epsilon"])
  if rule == "power_mean":
    return _power_mean(x_NM, params["p"])
  if rule == "gini":
    sorted_NM = np.sort(x_NM, axis=1)
    return sorted_NM @ (2 * (n - np.arange(n)) - 1) / n ** 2
  prefs_NN = _pairwise(x_NM)
  against_NN = prefs_NN.T
  off_diagonal = ~np.eye(len(x_NM), dtype=bool)
  if rule == "borda":
    return np.where(off_diagonal, n + prefs_NN - against_NN, 0).sum(1) / 2
  if rule == "copeland":
    half_points = np.where(prefs_NN > against_NN, 2, np.where(prefs_NN == against_NN, 1, 0))
    return np.where(off_diagonal, half_points, 0).sum(1) / 2
  paths_NN = np.where(prefs_NN > against_NN, prefs_NN, 0)
  for k in range(len(x_NM)):
    paths_NN = np.maximum(paths_NN, np.minimum(paths_NN[:, k:k + 1], paths_NN[k:k + 1, :]))
  np.fill_diagonal(paths_NN, 0)
  return (paths_NN > paths_NN.T).sum(1).astype(np.float64)


def numpy_select(utilities_BNM, mask_BM, rule, params):
  winners, welfare_rows = [], []
  for utilities_NM, present_M in zip(utilities_BNM, mask_BM):
    welfare_N = numpy_welfare(utilities_NM[:, present_M], rule, params)
    winners.append(int(np.argmax(welfare_N)))
    welfare_rows.append(welfare_N)
  return np.array(winners), np.stack(welfare_rows)


def make_inputs(num_groups, seed=0):
  rng = np.random.default_rng(seed)
  utilities = rng.uniform(1.0, 7.0, (num_groups, NUM_CANDIDATES, NUM_MEMBERS)).astype(np.float32)
  sizes = rng.integers(3, NUM_MEMBERS + 1, num_groups)
  # Present members at random slots, so masking is exercised as in real padded batches.
  order = np.argsort(rng.random((num_groups, NUM_MEMBERS)), axis=1)
  mask = order < sizes[:, None]
  return utilities, mask


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--groups", type=int, default=4096)
  parser.add_argument("--numpy_groups", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5, help="Timed runs per side per round.")
  args = parser.parse_args()
  numpy_groups = min(args.numpy_groups, args.groups)
  scale = args.groups / numpy_groups

  utilities, mask = make_inputs(args.groups)
  utilities_dev, mask_dev = jax.device_put(utilities), jax.device_put(mask)
  print(f"welfare.select: {args.groups} groups x {NUM_CANDIDATES} candidates x {NUM_MEMBERS} "
        f"member slots (3-5 present), float32, {jax.devices()[0].platform}; "
        f"{common.machine_load()}")
  print(f"jax: jitted calls; numpy: a Python loop over groups, measured on {numpy_groups} of "
        f"{args.groups} groups" + (f" and scaled x{scale:g}" if scale != 1 else "")
        + f"; {args.rounds} alternating rounds of {args.repeats} runs per side")
  print(f"{'rule':<28}{'jax ms min/median/spread':>26}{'numpy ms min/median/spread':>30}"
        f"{'ratio (medians, minimums)':>28}")
  for rule, params in RULES:
    def run_jax():
      return jax.block_until_ready(welfare.select(utilities_dev, mask_dev, rule, **params))

    winner, welfare_BN = run_jax()
    ref_winner, ref_welfare = numpy_select(utilities[:numpy_groups], mask[:numpy_groups], rule,
                                           params)
    np.testing.assert_allclose(np.asarray(welfare_BN)[:numpy_groups], ref_welfare, rtol=1e-4,
                               atol=1e-4, err_msg=rule)
    agree = np.mean(np.asarray(winner)[:numpy_groups] == ref_winner)
    assert agree > 0.99, f"{rule}: winners agree on only {agree:.1%} of groups"
    result = timing.compare(
        {"jax": run_jax, "numpy": lambda: numpy_select(utilities[:numpy_groups],
                                                       mask[:numpy_groups], rule, params)},
        rounds=args.rounds, repeats=args.repeats)
    result["numpy"].seconds = [s * scale for s in result["numpy"].seconds]
    jax_t, numpy_t = result["jax"], result["numpy"]
    label = rule + "".join(f" {k}={v:g}" for k, v in params.items())
    unsteady = [name for name, t in result.items() if t.spread > timing.SPREAD_LIMIT]
    ratio = (f"{numpy_t.median / jax_t.median:.0f}x, {numpy_t.min / jax_t.min:.0f}x"
             + (f" UNRELIABLE ({', '.join(unsteady)} spread)" if unsteady else ""))
    print(f"{label:<28}{jax_t.min * 1e3:>9.2f} /{jax_t.median * 1e3:>7.2f} /{jax_t.spread:>5.0%}"
          f"{numpy_t.min * 1e3:>12.1f} /{numpy_t.median * 1e3:>7.1f} /{numpy_t.spread:>5.0%}"
          f"   {ratio:>24}")


if __name__ == "__main__":
  main()
