"""Social welfare functions and voting rules over [batch, candidates, members] utilities.

The selection step of the method: for each group b the reward model predicts a utility
`utilities_BNM[b, n, m]` of candidate statement n for member m; a rule turns a candidate's
column of member utilities into one welfare number, and the candidate with the highest welfare
wins. Everything is vectorised over the batch of groups in jax.numpy (no Python loop over
groups or members), jit-able, and shardable along the batch dimension (each group is computed
on its own, so a batch sharded over devices needs no communication).

API
  aggregate(utilities_BNM, mask_BM, rule, candidate_mask_BN=None, **params) -> welfare_BN
  select(utilities_BNM, mask_BM, rule, candidate_mask_BN=None, **params)
      -> (winner_B, welfare_BN)
  validate_inputs(utilities_BNM, mask_BM, candidate_mask_BN=None, rule=None, **params)
      eager checks that raise on inputs that jit cannot reject (empty groups, NaNs, ...).
  pairwise_preferences(...) -> prefs_BNN and strongest_paths(prefs_BNN, strength) -> paths_BNN,
      the building blocks of the rank-based rules.

`rule` and `params` are static (Python strings and numbers): each combination compiles once.

Masks
  mask_BM (bool or 0/1 integers): which members of each group exist. Groups of different sizes
    share one M by padding; padded members' utilities are never read (they may hold anything,
    NaN included).
  candidate_mask_BN (optional, same dtypes): which candidates are valid. Invalid candidates
    are removed from the election before any rule runs: they never win, their welfare is -inf,
    and the rank-based rules rank members' preferences over the valid candidates only (Borda and
    Copeland scores would otherwise depend on which invalid candidates happen to be present).
  A group with no present member cannot be detected under jit (values cannot raise): every valid
    candidate then gets welfare 0, so the first valid candidate wins. A group with no valid
    candidate gets welfare -inf everywhere and winner 0. Non-finite utilities of present members
    for valid candidates are unsupported. `validate_inputs` rejects all three eagerly.

Tie-breaking
  `select` returns the lowest candidate index among the valid candidates of maximal welfare.
  Cardinal rules sort each candidate's present utilities before reducing them, so candidates
  whose utilities are the same multiset get bit-identical welfare (an exact tie, broken by
  index), and permuting members changes no bit of the result. Rank-based rules compute
  integer or half-integer counts, so their ties are exact too. A member who gives two
  candidates equal utility expresses no preference between them.

Cardinal rules (welfare in utility units unless stated; n = number of present members)
  utilitarian   mean of the members' utilities.
  rawlsian      minimum utility (leximin is not applied: ties on the minimum fall back to the
                lowest index, so this rule is only weakly Pareto).
  gini          Sen's welfare mean * (1 - Gini) with Gini = sum_ij |u_i - u_j| / (2 n^2 mean)
                over present members, computed in the equivalent form
                mean_{i,j} min(u_i, u_j) = mean - sum_ij |u_i - u_j| / (2 n^2), which needs no
                division by the mean: defined for any sign of utilities, and strictly
                increasing in each member's utility.
  The next three need positive utilities, so they read shifted utilities
      x = max(u - lower_bound, 0) + offset        (params lower_bound=0.0, offset=1e-6)
  `lower_bound` is the lowest utility the scale can produce (0 for [0, 1] utilities, 1 for a
  1..7 Likert scale); utilities below it are clipped to it (validate_inputs rejects them).
  `offset` >= 0 keeps a member at the bound from sending log(x) to -inf; the smaller it is, the
  closer such a member comes to a veto.
  nash          mean(log x) = log(prod x) / n: the log of the Nash product, per member.
  power_mean    generalised mean M_p(x) = (mean x^p)^(1/p), shifted back to utility units:
                M_p(x) + lower_bound - offset. Param p (required, any real or +-inf):
                p = 1 is utilitarian (mean(u) for u >= lower_bound), p = 0 is the
                geometric mean exp(nash), p -> -inf the minimum (p = -inf is exactly
                rawlsian on u >= lower_bound), p = +inf the maximum. Evaluated as c * exp(log1p(mean(expm1(p *
                log(x / c)))) / p) with c the minimum (p < 0) or maximum (p > 0) of x: no
                overflow for large |p|, and continuous through p -> 0.
  isoelastic    Atkinson's family with inequality aversion `epsilon` >= 0 (required), in its
                equally-distributed-equivalent form: power_mean with p = 1 - epsilon. So
                epsilon = 0 is utilitarian, epsilon = 1 is exp(nash) + lower_bound - offset
                (same ranking as nash), epsilon -> inf approaches rawlsian (epsilon = inf is
                rawlsian on u >= lower_bound). The classic form
                mean(x^(1 - eps)) / (1 - eps) is a strictly increasing function of this one
                (same selection), but overflows and loses its scale as eps grows.

Rank-based rules. prefs[i, j] = number of present members whose utility for candidate i is
strictly greater than for j (equal utilities: no preference, the member abstains on that pair).
  borda         Borda count: each member gives every valid candidate as many points as there
                are valid candidates it beats in that member's utilities, plus 1/2 per
                candidate it ties with (averaged ranks minus one); welfare = the sum over
                members. Computed as sum_j (n + prefs[i, j] - prefs[j, i]) / 2.
  copeland      pairwise majority: welfare = wins + 1/2 * ties over the other valid candidates
                (i beats j when prefs[i, j] > prefs[j, i]). Same ranking as wins - losses.
  schulze       Schulze's method. Links: strength="winning_votes" (default) uses prefs[i, j]
                where prefs[i, j] > prefs[j, i], else 0; strength="margins" uses
                prefs[i, j] - prefs[j, i] where positive. Strongest (widest) paths by
                Floyd-Warshall over intermediate candidates k (unrolled; a lax.fori_loop
                beyond 64 candidates), vectorised over the batch and all pairs.
                welfare = number of candidates j that i beats in the strongest-path relation
                (paths[i, j] > paths[j, i]). That relation is transitive, so a candidate
                beaten by j has fewer wins than j: the argmax is always unbeaten, i.e. a
                Schulze winner; among several Schulze winners the one with most wins, then
                the lowest index, is selected.

The rules `utilitarian, nash, isoelastic (finite epsilon), power_mean (finite p), gini, borda,
copeland` are strictly Pareto: a candidate that some member likes more and no member likes less
has strictly higher welfare. `rawlsian` and `schulze` are weakly Pareto (never lower welfare).
"""
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_REQUIRED = object()  # Marks a rule parameter that has no default.
_SHIFT_PARAMS = {"lower_bound": 0.0, "offset": 1e-6}

# Rule name -> its parameters and their defaults.
RULE_PARAMS: dict[str, dict[str, Any]] = {
    "utilitarian": {},
    "rawlsian": {},
    "nash": dict(_SHIFT_PARAMS),
    "isoelastic": {"epsilon": _REQUIRED, **_SHIFT_PARAMS},
    "power_mean": {"p": _REQUIRED, **_SHIFT_PARAMS},
    "gini": {},
    "borda": {},
    "copeland": {},
    "schulze": {"strength": "winning_votes"},
}
RULES: tuple[str, ...] = tuple(RULE_PARAMS)
RANK_RULES: frozenset[str] = frozenset({"borda", "copeland", "schulze"})
SCHULZE_STRENGTHS = ("winning_votes", "margins")


# ------------------------------------------------------------------------------------------
# Argument checking (Python level: runs on concrete arrays and tracers alike).


def _resolve_params(rule: str, params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
  """Checks the rule name and its params; returns all params (defaults filled in), sorted."""
  if not isinstance(rule, str) or rule not in RULE_PARAMS:
    raise ValueError(f"welfare: unknown rule {rule!r}; valid rules are {', '.join(RULES)}")
  accepted = RULE_PARAMS[rule]
  unknown = sorted(set(params) - set(accepted))
  if unknown:
    raise TypeError(f"welfare: rule {rule!r} takes no parameter(s) {unknown}; "
                    f"it accepts {sorted(accepted) or 'none'}")
  resolved = {}
  for name, default in accepted.items():
    value = params.get(name, default)
    if value is _REQUIRED:
      raise TypeError(f"welfare: rule {rule!r} requires parameter {name!r}")
    if name == "strength":
      if value not in SCHULZE_STRENGTHS:
        raise ValueError(f"welfare: schulze strength must be one of {SCHULZE_STRENGTHS}, "
                         f"got {value!r}")
    else:
      # Params select the compiled program, so they must be Python numbers, not traced values.
      if isinstance(value, (bool, jax.core.Tracer)) or not isinstance(
          value, (int, float, np.integer, np.floating)):
        raise TypeError(f"welfare: parameter {name}={value!r} of rule {rule!r} must be a static "
                        f"Python number (it selects the compiled program)")
      value = float(value)
      if math.isnan(value):
        raise ValueError(f"welfare: parameter {name} of rule {rule!r} is NaN")
    resolved[name] = value
  if "lower_bound" in resolved and not math.isfinite(resolved["lower_bound"]):
    raise ValueError(f"welfare: lower_bound must be finite, got {resolved['lower_bound']}")
  if "offset" in resolved and not (0.0 <= resolved["offset"] < math.inf):
    raise ValueError(f"welfare: offset must be finite and >= 0, got {resolved['offset']}")
  if rule == "isoelastic" and resolved["epsilon"] < 0:
    raise ValueError(f"welfare: isoelastic epsilon must be >= 0 (inequality aversion), got "
                     f"{resolved['epsilon']}; use power_mean with p > 1 for inequality-seeking")
  return tuple(sorted(resolved.items()))


def _check_mask_dtype(name: str, mask) -> None:
  dtype = jnp.asarray(mask).dtype if not hasattr(mask, "dtype") else mask.dtype
  if not (jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(f"welfare: {name} must be boolean (or 0/1 integers), got dtype {dtype}")


def _check_shapes(utilities_BNM, mask_BM, candidate_mask_BN) -> None:
  shape = tuple(np.shape(utilities_BNM))
  if len(shape) != 3:
    raise ValueError(f"welfare: utilities_BNM must be [batch, candidates, members], got shape "
                     f"{shape}")
  batch, num_candidates, num_members = shape
  if tuple(np.shape(mask_BM)) != (batch, num_members):
    raise ValueError(f"welfare: mask_BM must have shape (batch, members) = "
                     f"{(batch, num_members)} to match utilities_BNM {shape}, got "
                     f"{tuple(np.shape(mask_BM))}")
  _check_mask_dtype("mask_BM", mask_BM)
  if num_candidates < 1 or num_members < 1:
    raise ValueError(f"welfare: need at least one candidate and one member slot, got {shape}")
  if candidate_mask_BN is not None:
    if tuple(np.shape(candidate_mask_BN)) != (batch, num_candidates):
      raise ValueError(f"welfare: candidate_mask_BN must have shape (batch, candidates) = "
                       f"{(batch, num_candidates)} to match utilities_BNM {shape}, got "
                       f"{tuple(np.shape(candidate_mask_BN))}")
    _check_mask_dtype("candidate_mask_BN", candidate_mask_BN)


def validate_inputs(utilities_BNM, mask_BM, candidate_mask_BN=None, rule: Optional[str] = None,
                    **params) -> None:
  """Eagerly rejects inputs whose problems jit cannot report (call outside jit).

  Raises ValueError if a group has no present member or no valid candidate, if a present
  member's utility for a valid candidate is not finite, or (given a rule that shifts
  utilities) if such a utility lies below `lower_bound`. Also runs every shape/param check of
  `aggregate`.
  """
  _check_shapes(utilities_BNM, mask_BM, candidate_mask_BN)
  resolved = dict(_resolve_params(rule, params)) if rule is not None else {}
  utilities = np.asarray(utilities_BNM)
  member_present = np.asarray(mask_BM).astype(bool)
  valid = (np.ones(utilities.shape[:2], bool) if candidate_mask_BN is None
           else np.asarray(candidate_mask_BN).astype(bool))
  empty_groups = np.flatnonzero(~member_present.any(-1))
  if empty_groups.size:
    raise ValueError(f"welfare: groups {empty_groups[:10].tolist()} have no present member "
                     f"(under jit they would select their first valid candidate)")
  no_candidate = np.flatnonzero(~valid.any(-1))
  if no_candidate.size:
    raise ValueError(f"welfare: groups {no_candidate[:10].tolist()} have no valid candidate")
  read = valid[:, :, None] & member_present[:, None, :]
  bad = read & ~np.isfinite(utilities)
  if bad.any():
    raise ValueError(f"welfare: non-finite utilities at (group, candidate, member) "
                     f"{np.argwhere(bad)[:5].tolist()}")
  if "lower_bound" in resolved:
    below = read & (utilities < resolved["lower_bound"])
    if below.any():
      raise ValueError(f"welfare: rule {rule!r} has lower_bound={resolved['lower_bound']} but "
                       f"utilities at (group, candidate, member) {np.argwhere(below)[:5].tolist()} "
                       f"lie below it (they would be clipped)")


# ------------------------------------------------------------------------------------------
# Cardinal rules, on each candidate's present utilities sorted ascending. The members are held
# as a Python list of [batch, candidates] arrays, one per rank: XLA then fuses the whole rule
# into a few elementwise loops over contiguous memory (reducing a minor axis of 3..5 members,
# or jnp.sort over it, is an order of magnitude slower on CPU).

_MAX_NETWORK_MEMBERS = 16  # above this, jnp.sort beats an O(M^2) comparator network


def _sort_ascending(columns_BN: list) -> list:
  """Sorts M arrays elementwise (the k-th output holds the k-th smallest), by a sorting network."""
  columns_BN = list(columns_BN)
  num = len(columns_BN)
  if num > _MAX_NETWORK_MEMBERS:
    sorted_BNM = jnp.sort(jnp.stack(columns_BN, axis=-1), axis=-1)
    return [sorted_BNM[..., k] for k in range(num)]
  # Odd-even transposition sort: num rounds of compare-exchange on alternating neighbour pairs.
  for round_index in range(num):
    for k in range(round_index % 2, num - 1, 2):
      low, high = columns_BN[k], columns_BN[k + 1]
      columns_BN[k], columns_BN[k + 1] = jnp.minimum(low, high), jnp.maximum(low, high)
  return columns_BN


def _sum_present(terms_BN: list, present_B1: list):
  """Sum over the present ranks, always in rank order (so equal multisets give equal bits)."""
  total_BN = jnp.where(present_B1[0], terms_BN[0], 0)
  for term_BN, present in zip(terms_BN[1:], present_B1[1:]):
    total_BN = total_BN + jnp.where(present, term_BN, 0)
  return total_BN


def _power_mean(ranked_BN: list, present_B1: list, count_B1, p: float):
  """Generalised mean of the present x >= 0, given sorted ascending by rank."""
  if p == -math.inf:
    return ranked_BN[0]
  top_BN = ranked_BN[0]  # the largest present value: the last present rank
  for x_BN, present in zip(ranked_BN[1:], present_B1[1:]):
    top_BN = jnp.where(present, x_BN, top_BN)
  if p == math.inf:
    return top_BN
  if p == 0:
    return jnp.exp(_sum_present([jnp.log(x) for x in ranked_BN], present_B1) / count_B1)
  # Scaling by the extreme that dominates (min for p < 0, max for p > 0) keeps every
  # (x / c)^p in [0, 1], so no |p| overflows; expm1/log1p keep p near 0 accurate.
  scale_BN = ranked_BN[0] if p < 0 else top_BN
  positive_BN = scale_BN > 0
  safe_scale_BN = jnp.where(positive_BN, scale_BN, 1)
  terms_BN = [jnp.expm1(p * jnp.log(x / safe_scale_BN)) for x in ranked_BN]
  mean_BN = _sum_present(terms_BN, present_B1) / count_B1
  mean_power_BN = safe_scale_BN * jnp.exp(jnp.log1p(mean_BN) / p)
  # A zero x with p < 0 (only possible with offset = 0) pulls the mean to 0, as in the limit.
  return jnp.where(positive_BN, mean_power_BN, 0)


def _cardinal_welfare(utilities_BNM, mask_BM, rule: str, params: dict[str, Any]):
  num_members = utilities_BNM.shape[-1]
  count_B1 = jnp.sum(mask_BM, axis=-1, dtype=jnp.int32)[:, None]
  # Canonical order: present members first, ascending; see "Tie-breaking" in the docstring.
  ranked_BN = _sort_ascending(
      [jnp.where(mask_BM[:, m, None], utilities_BNM[:, :, m], jnp.inf)
       for m in range(num_members)])
  present_B1 = [count_B1 > k for k in range(num_members)]
  float_count_B1 = jnp.maximum(count_B1, 1).astype(utilities_BNM.dtype)

  if rule == "utilitarian":
    return _sum_present(ranked_BN, present_B1) / float_count_B1
  if rule == "rawlsian":
    return ranked_BN[0]
  if rule == "gini":
    # mean_{i,j} min(u_i, u_j): the k-th smallest (0-based) is the min of 2 (n - k) - 1
    # ordered pairs. Integer weights keep integer utilities exact, so ties stay exact.
    weighted_BN = [(2 * (count_B1 - k) - 1) * x for k, x in enumerate(ranked_BN)]
    return _sum_present(weighted_BN, present_B1) / (float_count_B1 * float_count_B1)

  lower_bound, offset = params["lower_bound"], params["offset"]
  # Absent ranks hold 1 (log 0, ratio 1) so no inf/NaN arises even where they are masked off.
  shifted_BN = [jnp.where(present, jnp.maximum(x - lower_bound, 0) + offset, 1)
                for x, present in zip(ranked_BN, present_B1)]
  if rule == "nash":
    return _sum_present([jnp.log(x) for x in shifted_BN], present_B1) / float_count_B1
  p = 1.0 - params["epsilon"] if rule == "isoelastic" else params["p"]
  return _power_mean(shifted_BN, present_B1, float_count_B1, p) + (lower_bound - offset)


# ------------------------------------------------------------------------------------------
# Rank-based rules.


_MAX_UNROLLED_MEMBERS = 64  # beyond this, one [B, N, N, M] reduction keeps the graph small


def _count_dtype(num_members: int):
  # Counts never exceed the member count; the narrowest type that holds them cuts the memory
  # traffic of the O(N^3) path search (the cost on CPU) by up to 4x.
  if num_members <= np.iinfo(np.int8).max:
    return jnp.int8
  return jnp.int16 if num_members <= np.iinfo(np.int16).max else jnp.int32


def pairwise_preferences(utilities_BNM, mask_BM, candidate_mask_BN=None):
  """prefs_BNN[b, i, j]: present members of group b with utility(i) > utility(j).

  Rows and columns of invalid candidates are 0; equal utilities count for neither side. The
  dtype is the narrowest signed integer that holds the member count (int8 for <= 127 members).
  """
  _check_shapes(utilities_BNM, mask_BM, candidate_mask_BN)
  utilities_BNM = jnp.asarray(utilities_BNM)
  mask_BM = jnp.asarray(mask_BM).astype(bool)
  num_members = utilities_BNM.shape[-1]
  count_dtype = _count_dtype(num_members)
  if num_members <= _MAX_UNROLLED_MEMBERS:
    # One [B, N, N] comparison per member, summed elementwise: about 2x faster on CPU than
    # materialising [B, N, N, M] and reducing its short minor axis.
    prefs_BNN = jnp.zeros(utilities_BNM.shape[:2] + utilities_BNM.shape[1:2], count_dtype)
    for m in range(num_members):
      column_BN = utilities_BNM[:, :, m]
      prefers_BNN = (column_BN[:, :, None] > column_BN[:, None, :]) & mask_BM[:, m, None, None]
      prefs_BNN = prefs_BNN + prefers_BNN.astype(count_dtype)
  else:
    prefers_BNNM = ((utilities_BNM[:, :, None, :] > utilities_BNM[:, None, :, :])
                    & mask_BM[:, None, None, :])
    prefs_BNN = jnp.sum(prefers_BNNM, axis=-1, dtype=count_dtype)
  if candidate_mask_BN is not None:
    valid_BN = jnp.asarray(candidate_mask_BN).astype(bool)
    prefs_BNN = jnp.where(valid_BN[:, :, None] & valid_BN[:, None, :], prefs_BNN, 0)
  return prefs_BNN


_MAX_UNROLLED_CANDIDATES = 64  # beyond this, a fori_loop keeps compile time flat


def strongest_paths(prefs_BNN, strength: str = "winning_votes"):
  """Schulze's strongest-path strengths paths_BNN[b, i, j] (diagonal 0), by widest paths."""
  if strength not in SCHULZE_STRENGTHS:
    raise ValueError(f"welfare: schulze strength must be one of {SCHULZE_STRENGTHS}, got "
                     f"{strength!r}")
  prefs_BNN = jnp.asarray(prefs_BNN)
  against_BNN = jnp.swapaxes(prefs_BNN, 1, 2)
  link_value_BNN = prefs_BNN if strength == "winning_votes" else prefs_BNN - against_BNN
  links_BNN = jnp.where(prefs_BNN > against_BNN, link_value_BNN, 0).astype(prefs_BNN.dtype)

  # Floyd-Warshall over intermediate candidates k. Updating i == k, j == k or i == j as well is
  # harmless: those entries can only grow on the diagonal, and the diagonal never raises an
  # off-diagonal min(); so no masking is needed.
  def relax_through(paths_BNN, to_k_BN1, from_k_B1N):
    return jnp.maximum(paths_BNN, jnp.minimum(to_k_BN1, from_k_B1N))

  num_candidates = prefs_BNN.shape[-1]
  paths_BNN = links_BNN
  if num_candidates <= _MAX_UNROLLED_CANDIDATES:
    # Static slices: measured several times faster on CPU than a fori_loop's dynamic slices.
    for k in range(num_candidates):
      paths_BNN = relax_through(paths_BNN, paths_BNN[:, :, k:k + 1], paths_BNN[:, k:k + 1, :])
  else:
    paths_BNN = lax.fori_loop(
        0, num_candidates,
        lambda k, paths: relax_through(paths, lax.dynamic_slice_in_dim(paths, k, 1, axis=2),
                                       lax.dynamic_slice_in_dim(paths, k, 1, axis=1)),
        links_BNN)
  return jnp.where(jnp.eye(num_candidates, dtype=bool), 0, paths_BNN)


def _rank_welfare(utilities_BNM, mask_BM, valid_BN, rule: str, params: dict[str, Any]):
  prefs_BNN = pairwise_preferences(utilities_BNM, mask_BM, valid_BN)
  against_BNN = jnp.swapaxes(prefs_BNN, 1, 2)
  num_candidates = prefs_BNN.shape[-1]
  # Opponents: the other valid candidates.
  opponent_BNN = valid_BN[:, None, :] & ~jnp.eye(num_candidates, dtype=bool)
  if rule == "borda":
    count_B11 = jnp.sum(mask_BM, axis=-1, dtype=jnp.int32)[:, None, None]
    margin_BNN = prefs_BNN.astype(jnp.int32) - against_BNN
    doubled_points_BNN = jnp.where(opponent_BNN, count_B11 + margin_BNN, 0)
    return jnp.sum(doubled_points_BNN, axis=-1).astype(jnp.float32) / 2
  if rule == "copeland":
    half_points_BNN = jnp.where(prefs_BNN > against_BNN, 2,
                                jnp.where(prefs_BNN == against_BNN, 1, 0))
    return jnp.sum(jnp.where(opponent_BNN, half_points_BNN, 0), axis=-1).astype(jnp.float32) / 2
  paths_BNN = strongest_paths(prefs_BNN, params["strength"])
  beats_BNN = paths_BNN > jnp.swapaxes(paths_BNN, 1, 2)
  return jnp.sum(beats_BNN, axis=-1).astype(jnp.float32)


# ------------------------------------------------------------------------------------------
# Public entry points.


def _welfare(utilities_BNM, mask_BM, candidate_mask_BN, rule: str,
             params: tuple[tuple[str, Any], ...]):
  utilities_BNM = jnp.asarray(utilities_BNM)
  utilities_BNM = utilities_BNM.astype(jnp.result_type(utilities_BNM.dtype, jnp.float32))
  mask_BM = jnp.asarray(mask_BM).astype(bool)
  valid_BN = (jnp.ones(utilities_BNM.shape[:2], bool) if candidate_mask_BN is None
              else jnp.asarray(candidate_mask_BN).astype(bool))
  if rule in RANK_RULES:
    welfare_BN = _rank_welfare(utilities_BNM, mask_BM, valid_BN, rule, dict(params))
  else:
    welfare_BN = _cardinal_welfare(utilities_BNM, mask_BM, rule, dict(params))
  welfare_BN = welfare_BN.astype(utilities_BNM.dtype)
  empty_B1 = ~jnp.any(mask_BM, axis=-1, keepdims=True)
  welfare_BN = jnp.where(empty_B1, 0, welfare_BN)
  return jnp.where(valid_BN, welfare_BN, -jnp.inf)


def _select(utilities_BNM, mask_BM, candidate_mask_BN, rule, params):
  welfare_BN = _welfare(utilities_BNM, mask_BM, candidate_mask_BN, rule, params)
  valid_BN = (jnp.ones(welfare_BN.shape, bool) if candidate_mask_BN is None
              else jnp.asarray(candidate_mask_BN).astype(bool))
  # Compare against the best *valid* welfare, so a valid candidate at -inf (nash with
  # offset 0) still beats invalid ones.
  best_B1 = jnp.max(jnp.where(valid_BN, welfare_BN, -jnp.inf), axis=-1, keepdims=True)
  num_candidates = welfare_BN.shape[-1]
  # The lowest best index as a plain min-reduction: XLA's argmax (a variadic reduce) costs
  # several times the whole welfare computation on CPU.
  index_BN = jnp.where(valid_BN & (welfare_BN == best_B1),
                       jnp.arange(num_candidates, dtype=jnp.int32), num_candidates)
  winner_B = jnp.min(index_BN, axis=-1)
  return jnp.where(winner_B == num_candidates, 0, winner_B), welfare_BN


_welfare_jit = jax.jit(_welfare, static_argnames=("rule", "params"))
_select_jit = jax.jit(_select, static_argnames=("rule", "params"))


def aggregate(utilities_BNM, mask_BM, rule: str, candidate_mask_BN=None, **params):
  """Welfare of every candidate of every group (higher is better); -inf for invalid ones.

  Args:
    utilities_BNM: [batch, candidates, members] predicted utilities (float or int).
    mask_BM: [batch, members] bool (or 0/1 ints): which members exist.
    rule: one of RULES (static).
    candidate_mask_BN: optional [batch, candidates] bool: which candidates are valid.
    **params: the rule's parameters (static Python numbers/strings); see the module docstring.

  Returns:
    welfare_BN, float32 (float64 for float64 utilities under x64).
  """
  resolved = _resolve_params(rule, params)
  _check_shapes(utilities_BNM, mask_BM, candidate_mask_BN)
  return _welfare_jit(utilities_BNM, mask_BM, candidate_mask_BN, rule=rule, params=resolved)


def select(utilities_BNM, mask_BM, rule: str, candidate_mask_BN=None, **params):
  """The winning candidate of each group and every candidate's welfare.

  Same arguments as `aggregate`. Returns (winner_B int32, welfare_BN): winner_B is the lowest
  index among the valid candidates of maximal welfare (0 for a group without valid candidates).
  """
  resolved = _resolve_params(rule, params)
  _check_shapes(utilities_BNM, mask_BM, candidate_mask_BN)
  return _select_jit(utilities_BNM, mask_BM, candidate_mask_BN, rule=rule, params=resolved)
