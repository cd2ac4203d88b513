"""Welfare functions and voting rules: against per-group references, axioms, limits, sharding."""
import itertools
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from consensus_jax import partitioning
from consensus_jax import welfare

INF = math.inf
# (rule, params) pairs covering every rule and the special cases of each parameter.
CASES = [
    ("utilitarian", {}),
    ("rawlsian", {}),
    ("nash", {}),
    ("nash", {"lower_bound": 1.0, "offset": 0.5}),
    ("isoelastic", {"epsilon": 0.0}),
    ("isoelastic", {"epsilon": 0.5}),
    ("isoelastic", {"epsilon": 1.0}),
    ("isoelastic", {"epsilon": 3.0, "lower_bound": 1.0, "offset": 0.25}),
    ("isoelastic", {"epsilon": INF}),
    ("power_mean", {"p": -2.0}),
    ("power_mean", {"p": 0.0}),
    ("power_mean", {"p": 0.5}),
    ("power_mean", {"p": 2.0}),
    ("power_mean", {"p": -INF}),
    ("power_mean", {"p": INF}),
    ("gini", {}),
    ("borda", {}),
    ("copeland", {}),
    ("schulze", {}),
    ("schulze", {"strength": "margins"}),
]
CASE_IDS = [f"{rule}-{'-'.join(f'{k}={v}' for k, v in params.items())}" for rule, params in CASES]
# Rules whose float32 arithmetic is exact on small-integer utilities: their winners must match
# the reference exactly, ties included.
EXACT_ON_INTEGERS = {"utilitarian", "rawlsian", "gini", "borda", "copeland", "schulze"}
STRICTLY_PARETO = [c for c in CASES if c[0] not in ("rawlsian", "schulze")
                   and math.isfinite(c[1].get("epsilon", 0.0))
                   and math.isfinite(c[1].get("p", 0.0))]


BATCH, NUM_CANDIDATES, NUM_MEMBERS = 96, 7, 5  # one shape for most tests: one compile per rule


def make_inputs(seed, batch=BATCH, num_candidates=NUM_CANDIDATES, num_members=NUM_MEMBERS,
                discrete=True, candidate_mask=True, garbage="finite"):
  """Random groups of 2..5 present members (at random slots) and some invalid candidates.

  Discrete utilities are 1..7 Likert points, so ties within and across members are frequent.
  Absent members and invalid candidates keep ordinary random utilities (garbage="finite": they
  would change results if any rule read them) or hold NaN (garbage="nan").
  """
  rng = np.random.default_rng(seed)
  shape = (batch, num_candidates, num_members)
  if discrete:
    utilities = rng.integers(1, 8, shape).astype(np.float32)
  else:
    utilities = rng.uniform(1.0, 7.0, shape).astype(np.float32)
  mask = np.zeros((batch, num_members), bool)
  for b in range(batch):
    mask[b, rng.choice(num_members, rng.integers(2, num_members + 1), replace=False)] = True
  valid = np.ones((batch, num_candidates), bool)
  if candidate_mask:
    valid = rng.random((batch, num_candidates)) < 0.8
    valid[np.arange(batch), rng.integers(0, num_candidates, batch)] = True
    valid[: batch // 4] = True
  if garbage == "nan":
    utilities[~np.broadcast_to(mask[:, None, :], shape)] = np.nan
    utilities[~valid] = np.nan
  return utilities, mask, valid


def run_select(utilities, mask, rule, params, valid=None):
  """welfare.select with an explicit all-valid candidate mask (keeps the jit cache warm)."""
  if valid is None:
    valid = np.ones(utilities.shape[:2], bool)
  return tuple(map(np.asarray, welfare.select(utilities, mask, rule, valid, **params)))


# ------------------------------------------------------------------------------------------
# Per-group reference implementations: plain Python, float64, textbook definitions.


def ref_group_welfare(u_NM, present_M, valid_N, rule, params):
  """Welfare of each candidate of one group (-inf for invalid ones)."""
  members = [m for m in range(len(present_M)) if present_M[m]]
  candidates = [c for c in range(len(valid_N)) if valid_N[c]]
  lower_bound = params.get("lower_bound", 0.0)
  offset = params.get("offset", 1e-6)
  n = len(members)
  welfare = [-INF] * len(valid_N)

  def utils(c):
    return [float(u_NM[c, m]) for m in members]

  def shifted(c):
    return [max(x - lower_bound, 0.0) + offset for x in utils(c)]

  def power_mean(xs, p):
    if p == -INF:
      return min(xs)
    if p == INF:
      return max(xs)
    if p == 0:
      return math.exp(sum(math.log(x) for x in xs) / len(xs))
    return (sum(x ** p for x in xs) / len(xs)) ** (1 / p)

  def prefer(a, b):  # members strictly preferring candidate a to b
    return sum(1 for m in members if u_NM[a, m] > u_NM[b, m])

  for c in candidates:
    xs = utils(c)
    if rule == "utilitarian":
      welfare[c] = sum(xs) / n
    elif rule == "rawlsian":
      welfare[c] = min(xs)
    elif rule == "nash":
      welfare[c] = sum(math.log(x) for x in shifted(c)) / n
    elif rule == "isoelastic":
      eps = params["epsilon"]
      ys = shifted(c)
      if eps == 1:
        ede = math.exp(sum(math.log(y) for y in ys) / n)
      elif eps == INF:
        ede = min(ys)
      else:
        ede = (sum(y ** (1 - eps) for y in ys) / n) ** (1 / (1 - eps))
      welfare[c] = ede + lower_bound - offset
    elif rule == "power_mean":
      welfare[c] = power_mean(shifted(c), params["p"]) + lower_bound - offset
    elif rule == "gini":
      mean = sum(xs) / n
      gini = sum(abs(a - b) for a in xs for b in xs) / (2 * n * n * mean)
      welfare[c] = mean * (1 - gini)
    elif rule == "borda":
      total = 0.0
      for m in members:  # averaged ranks: rank 1 = least liked; points = rank - 1
        below = sum(1 for o in candidates if u_NM[o, m] < u_NM[c, m])
        tied = sum(1 for o in candidates if o != c and u_NM[o, m] == u_NM[c, m])
        total += (1 + below + tied / 2) - 1
      welfare[c] = total
  if rule == "copeland":
    for c in candidates:
      welfare[c] = 0.0
    for a, b in itertools.combinations(candidates, 2):
      ab, ba = prefer(a, b), prefer(b, a)
      welfare[a] += 1.0 if ab > ba else 0.5 if ab == ba else 0.0
      welfare[b] += 1.0 if ba > ab else 0.5 if ab == ba else 0.0
  if rule == "schulze":
    margins = params.get("strength", "winning_votes") == "margins"
    d = {(a, b): prefer(a, b) for a in candidates for b in candidates if a != b}
    p = {}
    for a, b in d:
      if d[a, b] > d[b, a]:
        p[a, b] = d[a, b] - d[b, a] if margins else d[a, b]
      else:
        p[a, b] = 0
    for k in candidates:  # Floyd-Warshall widest paths, as in Schulze's paper
      for i in candidates:
        if i == k:
          continue
        for j in candidates:
          if j != k and j != i:
            p[i, j] = max(p[i, j], min(p[i, k], p[k, j]))
    for a in candidates:
      welfare[a] = float(sum(1 for b in candidates if b != a and p[a, b] > p[b, a]))
  if n == 0:
    welfare = [0.0 if v else -INF for v in valid_N]
  return np.array(welfare)


def ref_welfare(utilities, mask, valid, rule, params):
  return np.stack([ref_group_welfare(utilities[b], mask[b], valid[b], rule, params)
                   for b in range(len(utilities))])


def first_max(values, tol):
  """Lowest index whose value is within tol of the maximum."""
  return int(np.flatnonzero(values >= np.max(values) - tol)[0])


# ------------------------------------------------------------------------------------------
# Agreement with the references.


@pytest.mark.parametrize("rule, params", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("discrete", [True, False], ids=["likert", "continuous"])
def test_matches_per_group_reference(rule, params, discrete):
  seed = zlib.crc32(f"{rule}{sorted(params.items())}{discrete}".encode())
  utilities, mask, valid = make_inputs(seed, discrete=discrete)
  winner, welfare_BN = map(np.asarray, welfare.select(utilities, mask, rule, valid, **params))
  expected = ref_welfare(utilities, mask, valid, rule, params)
  np.testing.assert_allclose(welfare_BN, expected, rtol=2e-5, atol=2e-5)
  assert np.all(valid[np.arange(len(winner)), winner]), "an invalid candidate won"
  for b in range(len(winner)):
    ref_row = expected[b]
    if discrete and rule in EXACT_ON_INTEGERS:
      # Distinct exact values differ by >= 1/50 here, so 1e-9 only merges true ties.
      assert winner[b] == first_max(ref_row, 1e-9), (b, welfare_BN[b], ref_row)
    else:
      # Float rounding may order near-ties either way: the winner must be a near-maximum.
      assert ref_row[winner[b]] >= np.max(ref_row) - 1e-4 * max(1.0, abs(np.max(ref_row))), b


@pytest.mark.parametrize("rule, params", CASES, ids=CASE_IDS)
def test_masked_slots_are_never_read(rule, params):
  """NaN in absent members' and invalid candidates' slots gives the very same results."""
  finite = make_inputs(seed=17)
  with_nan = make_inputs(seed=17, garbage="nan")
  assert np.isnan(with_nan[0]).any()
  for got, want in zip(run_select(*with_nan[:2], rule, params, with_nan[2]),
                       run_select(*finite[:2], rule, params, finite[2])):
    np.testing.assert_array_equal(got, want)


def test_pairwise_preferences_match_reference_counts():
  utilities, mask, valid = make_inputs(seed=4, batch=16)
  prefs = np.asarray(welfare.pairwise_preferences(utilities, mask, valid))
  for b in range(len(utilities)):
    for i, j in itertools.product(range(utilities.shape[1]), repeat=2):
      expected = (int(np.sum(utilities[b, i, mask[b]] > utilities[b, j, mask[b]]))
                  if valid[b, i] and valid[b, j] else 0)
      assert prefs[b, i, j] == expected


@pytest.mark.parametrize("rule", ["utilitarian", "rawlsian", "gini", "nash", "power_mean"])
def test_many_members_use_jnp_sort_and_still_match_the_reference(rule):
  params = {"p": -2.0} if rule == "power_mean" else {}
  utilities, mask, valid = make_inputs(seed=18, batch=8, num_members=20, discrete=False)
  assert utilities.shape[-1] > welfare._MAX_NETWORK_MEMBERS
  _, welfare_BN = run_select(utilities, mask, rule, params, valid)
  np.testing.assert_allclose(welfare_BN, ref_welfare(utilities, mask, valid, rule, params),
                             rtol=2e-5)


def test_fallback_loops_equal_the_unrolled_ones(monkeypatch):
  rng = np.random.default_rng(19)
  utilities = rng.integers(1, 8, (3, 70, 70)).astype(np.float32)
  mask = rng.random((3, 70)) < 0.7
  prefs = np.asarray(welfare.pairwise_preferences(utilities, mask))  # 70 > 64: one reduction
  paths = np.asarray(welfare.strongest_paths(prefs))  # 70 > 64: fori_loop
  monkeypatch.setattr(welfare, "_MAX_UNROLLED_MEMBERS", 100)
  monkeypatch.setattr(welfare, "_MAX_UNROLLED_CANDIDATES", 100)
  np.testing.assert_array_equal(np.asarray(welfare.pairwise_preferences(utilities, mask)), prefs)
  np.testing.assert_array_equal(np.asarray(welfare.strongest_paths(prefs)), paths)
  assert paths.max() > 0 and (paths != np.where(prefs > prefs.transpose(0, 2, 1), prefs, 0)).any()


# ------------------------------------------------------------------------------------------
# Hand-computed examples.

# Two candidates, three members on a 1..7 scale. A = (1, 7, 7), B = (3, 4, 4).
#   utilitarian: 15/3 = 5 vs 11/3                                   -> A
#   rawlsian: 1 vs 3                                                -> B
#   nash (lower_bound 0, offset 0): log(49)/3 vs log(48)/3          -> A (barely)
#   isoelastic eps=2 (harmonic mean): 3/(1 + 2/7) = 7/3 vs 3/(1/3 + 1/2) = 18/5 -> B
#   gini, mean of pairwise minima: (5*1 + 3*7 + 1*7)/9 = 33/9 vs (5*3 + 3*4 + 1*4)/9 = 31/9 -> A
#   borda: member 0 prefers B, members 1 and 2 prefer A: 2 vs 1      -> A
#   copeland: A beats B: 1 vs 0; schulze: A beats B: 1 vs 0          -> A
HAND_UTILITIES = np.array([[[1, 7, 7], [3, 4, 4]]], np.float32)
HAND_EXPECTED = [
    ("utilitarian", {}, [5, 11 / 3]),
    ("rawlsian", {}, [1, 3]),
    ("nash", {"offset": 0.0}, [math.log(49) / 3, math.log(48) / 3]),
    ("isoelastic", {"epsilon": 2.0, "offset": 0.0}, [7 / 3, 18 / 5]),
    ("power_mean", {"p": -1.0, "offset": 0.0}, [7 / 3, 18 / 5]),
    ("gini", {}, [33 / 9, 31 / 9]),
    ("borda", {}, [2, 1]),
    ("copeland", {}, [1, 0]),
    ("schulze", {}, [1, 0]),
]


@pytest.mark.parametrize("rule, params, expected", HAND_EXPECTED, ids=[c[0] for c in HAND_EXPECTED])
def test_hand_computed_two_candidates(rule, params, expected):
  winner, welfare_BN = welfare.select(HAND_UTILITIES, np.ones((1, 3), bool), rule, **params)
  np.testing.assert_allclose(np.asarray(welfare_BN)[0], expected, rtol=1e-6)
  assert int(winner[0]) == int(np.argmax(expected))


def test_condorcet_cycle_three_candidates():
  # Candidates in index order C, B, A; 9 members: 4 rank A>B>C, 3 rank B>C>A, 2 rank C>A>B.
  # Pairwise: A>B 6:3, B>C 7:2, C>A 5:4 -- a majority cycle, so Copeland ties all at 1 win.
  # Strongest paths (winning votes): A->B 6, B->C 7, C->A 5, A->C = min(6, 7) = 6,
  # B->A = min(7, 5) = 5, C->B = min(5, 6) = 5. A beats B (6 > 5) and C (6 > 5); B beats C
  # (7 > 5). Schulze welfare [C, B, A] = [0, 1, 2], winner A (index 2).
  # Borda points (2/1/0): A = 4*2 + 2*1 = 10, B = 4*1 + 3*2 = 10, C = 3*1 + 2*2 = 7: A and B
  # tie, the lower index (B, index 1) wins.
  rankings = [("A", "B", "C")] * 4 + [("B", "C", "A")] * 3 + [("C", "A", "B")] * 2
  order = ["C", "B", "A"]
  utilities = np.array([[[3 - r.index(c) for r in rankings] for c in order]], np.float32)
  mask = np.ones((1, 9), bool)
  winner, welfare_BN = welfare.select(utilities, mask, "schulze")
  np.testing.assert_array_equal(np.asarray(welfare_BN)[0], [0, 1, 2])
  assert int(winner[0]) == 2
  paths = np.asarray(welfare.strongest_paths(welfare.pairwise_preferences(utilities, mask)))[0]
  np.testing.assert_array_equal(paths, [[0, 5, 5], [7, 0, 5], [6, 6, 0]])
  winner, welfare_BN = welfare.select(utilities, mask, "borda")
  np.testing.assert_array_equal(np.asarray(welfare_BN)[0], [7, 10, 10])
  assert int(winner[0]) == 1
  winner, welfare_BN = welfare.select(utilities, mask, "copeland")
  np.testing.assert_array_equal(np.asarray(welfare_BN)[0], [1, 1, 1])
  assert int(winner[0]) == 0


def test_schulze_wikipedia_45_voters():
  # The worked example of the Wikipedia article "Schulze method" (45 voters, 5 candidates).
  # Pairwise d[X, Y] (rows A..E), from the ballots below:
  #   A: -  20 26 30 22     B: 25 -  16 33 18     C: 19 29 -  17 24
  #   D: 15 12 28 -  14     E: 23 27 21 31 -
  # Links keep d[X, Y] > d[Y, X]: A->C 26, A->D 30, B->A 25, B->D 33, C->B 29, C->E 24,
  # D->C 28, E->A 23, E->B 27, E->D 31. Widest paths, e.g. E->C = E-D-C = min(31, 28) = 28,
  # C->E = 24 (the only link into E), so E beats C; E->A = E-D-C-B-A = min(31,28,29,25) = 25
  # vs A->E = A-C-E = 24. Full strongest-path matrix:
  #   A: -  28 28 30 24     B: 25 -  28 33 24     C: 25 29 -  29 24
  #   D: 25 28 28 -  24     E: 25 28 28 31 -
  # E beats all four; A beats B, C, D; C beats B, D; B beats D. Order E > A > C > B > D,
  # welfare [A..E] = [3, 1, 2, 0, 4], winner E (index 4).
  ballots = [(5, "ACBED"), (5, "ADECB"), (8, "BEDAC"), (3, "CABED"), (7, "CAEBD"),
             (2, "CBADE"), (7, "DCEBA"), (8, "EBADC")]
  rankings = [order for count, order in ballots for _ in range(count)]
  utilities = np.array([[[5 - r.index(c) for r in rankings] for c in "ABCDE"]], np.float32)
  mask = np.ones((1, 45), bool)
  prefs = np.asarray(welfare.pairwise_preferences(utilities, mask))[0]
  np.testing.assert_array_equal(prefs, [[0, 20, 26, 30, 22], [25, 0, 16, 33, 18],
                                        [19, 29, 0, 17, 24], [15, 12, 28, 0, 14],
                                        [23, 27, 21, 31, 0]])
  paths = np.asarray(welfare.strongest_paths(prefs[None]))[0]
  np.testing.assert_array_equal(paths, [[0, 28, 28, 30, 24], [25, 0, 28, 33, 24],
                                        [25, 29, 0, 29, 24], [25, 28, 28, 0, 24],
                                        [25, 28, 28, 31, 0]])
  winner, welfare_BN = welfare.select(utilities, mask, "schulze")
  np.testing.assert_array_equal(np.asarray(welfare_BN)[0], [3, 1, 2, 0, 4])
  assert int(winner[0]) == 4


# ------------------------------------------------------------------------------------------
# Axioms.


@pytest.mark.parametrize("rule, params", CASES, ids=CASE_IDS)
def test_anonymity_permuting_members_changes_nothing(rule, params):
  utilities, mask, valid = make_inputs(seed=5)
  rng = np.random.default_rng(6)
  perm = np.stack([rng.permutation(mask.shape[1]) for _ in range(len(mask))])
  permuted_u = np.take_along_axis(utilities, perm[:, None, :], axis=2)
  permuted_m = np.take_along_axis(mask, perm, axis=1)
  winner, welfare_BN = welfare.select(utilities, mask, rule, valid, **params)
  p_winner, p_welfare_BN = welfare.select(permuted_u, permuted_m, rule, valid, **params)
  # Bitwise: cardinal rules reduce sorted utilities, rank rules count.
  np.testing.assert_array_equal(np.asarray(welfare_BN), np.asarray(p_welfare_BN))
  np.testing.assert_array_equal(np.asarray(winner), np.asarray(p_winner))


@pytest.mark.parametrize("rule, params", CASES, ids=CASE_IDS)
def test_unanimous_favourite_wins(rule, params):
  """A candidate every member strictly prefers to every other wins under every rule."""
  utilities, mask, _ = make_inputs(seed=7, candidate_mask=False)
  favourite = np.random.default_rng(8).integers(0, utilities.shape[1], len(utilities))
  utilities[np.arange(len(utilities)), favourite] = 7.5  # above every 1..7 utility
  winner, _ = run_select(utilities, mask, rule, params)
  np.testing.assert_array_equal(winner, favourite)


@pytest.mark.parametrize("rule, params", CASES, ids=CASE_IDS)
def test_pareto_dominated_candidate(rule, params):
  """Candidate 0 is a copy of candidate 3 that some present members like strictly less.

  Every rule gives it no more welfare; strictly Pareto rules give it strictly less, so it never
  wins, although index 0 would win every tie.
  """
  utilities, mask, _ = make_inputs(seed=9, discrete=False, candidate_mask=False)
  rng = np.random.default_rng(10)
  lowered = rng.random(mask.shape) < 0.5
  lowered[np.arange(len(mask)), mask.argmax(1)] = True  # at least one present member
  utilities[:, 0] = np.where(lowered, utilities[:, 3] - rng.uniform(0.1, 1.0, mask.shape),
                             utilities[:, 3])
  winner, welfare_BN = run_select(utilities, mask, rule, params)
  assert np.all(welfare_BN[:, 0] <= welfare_BN[:, 3])
  if (rule, params) in STRICTLY_PARETO:
    assert np.all(welfare_BN[:, 0] < welfare_BN[:, 3])
    assert not np.any(winner == 0)


# ------------------------------------------------------------------------------------------
# Limits of the parametric families.


def _continuous(seed=11):
  utilities, mask, _ = make_inputs(seed, discrete=False, candidate_mask=False)
  return utilities, mask


def _assert_same_selection(utilities, mask, got_welfare, want_welfare, atol):
  """Welfare within atol; the winner identical wherever the reference's top-two gap > 2 atol."""
  got_welfare, want_welfare = np.asarray(got_welfare), np.asarray(want_welfare)
  np.testing.assert_allclose(got_welfare, want_welfare, atol=atol, rtol=0)
  top_two = np.sort(want_welfare, axis=1)[:, -2:]
  clear = top_two[:, 1] - top_two[:, 0] > 2 * atol
  assert clear.mean() > 0.9  # the check below must cover most groups to mean anything
  np.testing.assert_array_equal(got_welfare.argmax(1)[clear], want_welfare.argmax(1)[clear])


def test_isoelastic_limits():
  utilities, mask = _continuous()
  agg = lambda rule, **kw: run_select(utilities, mask, rule, kw)[1]
  _assert_same_selection(utilities, mask, agg("isoelastic", epsilon=0.0), agg("utilitarian"), 1e-5)
  geometric = jnp.exp(agg("nash")) - 1e-6
  _assert_same_selection(utilities, mask, agg("isoelastic", epsilon=1.0), geometric, 1e-5)
  for near_one in (1 - 1e-4, 1 + 1e-4):  # continuous through the eps = 1 special case
    _assert_same_selection(utilities, mask, agg("isoelastic", epsilon=near_one), geometric, 1e-3)
  _assert_same_selection(utilities, mask, agg("isoelastic", epsilon=INF), agg("rawlsian"), 1e-6)
  # Finite but large epsilon: the EDE is within min * (n^(1/(eps - 1)) - 1) of the minimum.
  _assert_same_selection(utilities, mask, agg("isoelastic", epsilon=5000.0), agg("rawlsian"),
                         7 * (5 ** (1 / 4999) - 1))
  # Inequality aversion moves welfare monotonically from the mean down to the minimum.
  chain = [np.asarray(agg("isoelastic", epsilon=e)) for e in (0.0, 0.5, 1.0, 2.0, 10.0, INF)]
  for higher, lower in zip(chain, chain[1:]):
    assert np.all(lower <= higher + 1e-5)


def test_power_mean_limits():
  utilities, mask = _continuous(seed=12)
  agg = lambda rule, **kw: run_select(utilities, mask, rule, kw)[1]
  _assert_same_selection(utilities, mask, agg("power_mean", p=1.0), agg("utilitarian"), 1e-5)
  geometric = jnp.exp(agg("nash")) - 1e-6
  for tiny in (-1e-6, 1e-6):
    _assert_same_selection(utilities, mask, agg("power_mean", p=tiny), geometric, 1e-5)
  _assert_same_selection(utilities, mask, agg("power_mean", p=-5000.0), agg("rawlsian"),
                         7 * (5 ** (1 / 5000) - 1))
  _assert_same_selection(utilities, mask, agg("power_mean", p=-INF), agg("rawlsian"), 0.0)
  maximum = np.nanmax(np.where(mask[:, None, :], utilities, np.nan), axis=-1)
  _assert_same_selection(utilities, mask, agg("power_mean", p=5000.0), maximum, 7e-3)
  # The isoelastic family is the power mean with p = 1 - epsilon.
  for eps in (0.3, 2.0, 7.0):
    np.testing.assert_array_equal(np.asarray(agg("isoelastic", epsilon=eps)),
                                  np.asarray(agg("power_mean", p=1 - eps)))


def test_nash_is_the_log_of_the_shifted_product_and_clips_below_the_bound():
  utilities = np.array([[[2.0, 5.0], [0.5, 9.0]]], np.float32)
  mask = np.ones((1, 2), bool)
  got = np.asarray(welfare.aggregate(utilities, mask, "nash", lower_bound=1.0, offset=0.5))[0]
  # x = max(u - 1, 0) + 0.5: (1.5, 4.5) and (0.5 [clipped], 8.5).
  np.testing.assert_allclose(got, [math.log(1.5 * 4.5) / 2, math.log(0.5 * 8.5) / 2], rtol=1e-6)
  with pytest.raises(ValueError, match="below"):
    welfare.validate_inputs(utilities, mask, rule="nash", lower_bound=1.0)


# ------------------------------------------------------------------------------------------
# Masks, ties, degenerate groups.


@pytest.mark.parametrize("rule, params", CASES, ids=CASE_IDS)
def test_ties_go_to_the_lowest_index_and_invalid_candidates_never_win(rule, params):
  utilities, mask, _ = make_inputs(seed=13, candidate_mask=False)
  utilities[:, 2] = utilities[:, 5] = 7.5  # two identical unanimous favourites
  winner, _ = run_select(utilities, mask, rule, params)
  np.testing.assert_array_equal(winner, 2)
  # Invalid candidates with the best utilities of all still lose.
  valid = np.ones(utilities.shape[:2], bool)
  valid[:, 2] = False
  utilities[:, 2] = 100.0
  winner, welfare_BN = run_select(utilities, mask, rule, params, valid)
  np.testing.assert_array_equal(winner, 5)
  assert np.all(welfare_BN[:, 2] == -np.inf)
  # All candidates identical: candidate 0 wins.
  same = np.broadcast_to(utilities[:, :1], utilities.shape)
  np.testing.assert_array_equal(run_select(same, mask, rule, params)[0], 0)


def test_degenerate_groups_under_jit_follow_the_documented_behaviour():
  utilities, mask, _ = make_inputs(seed=14, discrete=False, candidate_mask=False)
  valid = np.ones(utilities.shape[:2], bool)
  mask[1] = False
  valid[1, 0] = False
  mask[2] = [True, False, True, False, False]
  valid[2] = False
  for rule, params in CASES:
    winner, welfare_BN = run_select(utilities, mask, rule, params, valid)
    np.testing.assert_array_equal(welfare_BN[1], [-np.inf] + [0] * 6)  # no members
    assert winner[1] == 1  # the first valid candidate
    assert np.all(welfare_BN[2] == -np.inf) and winner[2] == 0  # no valid candidate
  with pytest.raises(ValueError, match=r"groups \[1\] have no present member"):
    welfare.validate_inputs(utilities, mask, valid)
  mask[1, 0] = True
  with pytest.raises(ValueError, match=r"groups \[2\] have no valid candidate"):
    welfare.validate_inputs(utilities, mask, valid)
  valid[2, 0] = True
  welfare.validate_inputs(utilities, mask, valid, rule="nash")
  utilities[2, 0, 2] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    welfare.validate_inputs(utilities, mask, valid)
  utilities[2, 0, 1] = np.nan  # absent member: not read, not an error
  utilities[2, 0, 2] = 1.0
  welfare.validate_inputs(utilities, mask, valid)


def test_nash_with_zero_offset_keeps_valid_minus_infinity_above_invalid():
  # Every valid candidate has a member at utility 0, so log(0) = -inf; the invalid candidate 0
  # (also -inf, by masking) comes first but must not win.
  utilities = np.array([[[5.0, 5.0], [0.0, 1.0], [0.0, 2.0]]], np.float32)
  valid = np.array([[False, True, True]])
  winner, welfare_BN = welfare.select(utilities, np.ones((1, 2), bool), "nash", valid, offset=0.0)
  assert np.all(np.asarray(welfare_BN) == -np.inf)
  assert int(winner[0]) == 1


# ------------------------------------------------------------------------------------------
# Errors.


def test_errors_are_clear():
  u = np.zeros((2, 3, 4), np.float32)
  m = np.ones((2, 4), bool)
  with pytest.raises(ValueError, match="valid rules are utilitarian, rawlsian, nash"):
    welfare.aggregate(u, m, "condorcet")
  with pytest.raises(TypeError, match="requires parameter 'epsilon'"):
    welfare.aggregate(u, m, "isoelastic")
  with pytest.raises(TypeError, match=r"takes no parameter\(s\) \['p'\]"):
    welfare.select(u, m, "utilitarian", p=1.0)
  with pytest.raises(ValueError, match="epsilon must be >= 0"):
    welfare.aggregate(u, m, "isoelastic", epsilon=-1.0)
  with pytest.raises(ValueError, match="strength must be one of"):
    welfare.aggregate(u, m, "schulze", strength="ranked_pairs")
  with pytest.raises(ValueError, match=r"\[batch, candidates, members\]"):
    welfare.aggregate(u[0], m, "utilitarian")
  with pytest.raises(ValueError, match=r"mask_BM must have shape \(batch, members\) = \(2, 4\)"):
    welfare.aggregate(u, m[:, :3], "utilitarian")
  with pytest.raises(ValueError, match=r"candidate_mask_BN must have shape .* = \(2, 3\)"):
    welfare.select(u, m, "borda", np.ones((2, 4), bool))
  with pytest.raises(TypeError, match="mask_BM must be boolean"):
    welfare.aggregate(u, m.astype(np.float32), "utilitarian")
  with pytest.raises(TypeError, match="static Python number"):
    jax.jit(lambda u, e: welfare.aggregate(u, m, "isoelastic", epsilon=e))(u, 1.0)
  with pytest.raises(ValueError, match="valid rules are"):
    welfare.validate_inputs(u, m, rule="mean")


# ------------------------------------------------------------------------------------------
# Compilation and sharding.


def test_inside_jit_with_static_rule_and_int_masks():
  utilities, mask, valid = make_inputs(seed=15, discrete=False)

  @jax.jit
  def pick(u, m, v):
    return welfare.select(u, m, "isoelastic", v, epsilon=2.0)

  got = pick(utilities, mask.astype(np.int32), valid.astype(np.int8))
  want = welfare.select(utilities, mask, "isoelastic", valid, epsilon=2.0)
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_sharded_over_eight_devices_equals_unsharded():
  mesh = partitioning.make_mesh(data=2, fsdp=4)
  batch_spec = P(partitioning.BATCH_AXES)
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, batch_spec))
  utilities, mask, valid = make_inputs(seed=16, discrete=False)
  sharded = [shard(x) for x in (utilities, mask, valid)]
  one_case_per_rule = {rule: params for rule, params in reversed(CASES)}  # the first of each
  for rule, params in one_case_per_rule.items():
    fn = jax.jit(lambda u, m, v: welfare.select(u, m, rule, v, **params),
                 out_shardings=NamedSharding(mesh, batch_spec))
    compiled = fn.lower(*sharded).compile()
    winner, welfare_BN = compiled(*sharded)
    assert welfare_BN.sharding.spec == batch_spec
    assert len(welfare_BN.addressable_shards) == 8
    want_winner, want_welfare = welfare.select(utilities, mask, rule, valid, **params)
    np.testing.assert_array_equal(np.asarray(winner), np.asarray(want_winner))
    np.testing.assert_allclose(np.asarray(welfare_BN), np.asarray(want_welfare), rtol=1e-6)
    # Groups are independent: the compiled program must not move data between devices.
    hlo = compiled.as_text()
    for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
      assert collective not in hlo, (rule, collective)
