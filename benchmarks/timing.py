"""How every CPU benchmark times two sides (ours and a peer) so that their ratio holds.

This machine's speed drifts 10-20% within minutes, and a side timed after one warm-up can still
be settling. So each side is warmed up until two consecutive runs agree within 10% (at least two
runs), the sides then alternate in rounds (the order reversed every round, so drift skews both
alike), and each side is reported by its minimum, median and spread ((max - min) / median). The
ratio is given of medians and of minimums; a side whose spread exceeds 25% is flagged and its
ratio called unreliable instead of printed as a result.
"""
import dataclasses
import statistics
import time
from typing import Callable, Mapping, Sequence

WARMUP_AGREEMENT = 0.10
SPREAD_LIMIT = 0.25


@dataclasses.dataclass
class Timings:
  seconds: list[float]
  warmup: list[float]

  @property
  def min(self) -> float:
    return min(self.seconds)

  @property
  def median(self) -> float:
    return statistics.median(self.seconds)

  @property
  def spread(self) -> float:
    return (max(self.seconds) - min(self.seconds)) / self.median


def _timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
  start = clock()
  fn()
  return clock() - start


def warm_up(fn: Callable[[], object], min_runs: int = 2, max_runs: int = 10,
            agreement: float = WARMUP_AGREEMENT,
            clock: Callable[[], float] = time.perf_counter) -> list[float]:
  """Runs fn until two consecutive runs agree within `agreement` (and at least min_runs);
  returns the warm-up times (the first includes compilation). Gives up after max_runs."""
  times = []
  while len(times) < max_runs:
    times.append(_timed(fn, clock))
    if len(times) >= max(min_runs, 2):
      a, b = times[-2:]
      if abs(a - b) <= agreement * min(a, b):
        break
  return times


def compare(sides: Mapping[str, Callable[[], object]], rounds: int = 3, repeats: int = 2,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, Timings]:
  """Every side warmed up, then `rounds` rounds of `repeats` timed runs per side, the sides'
  order reversed each round. A side may also be a function returning its own run times (a
  peer in a child process): mark it with `child_timed`."""
  names = list(sides)
  results = {name: Timings([], []) for name in names}
  for name in names:
    if not getattr(sides[name], "child_timed", False):
      results[name].warmup = warm_up(sides[name], clock=clock)
  for round_index in range(rounds):
    order = names if round_index % 2 == 0 else names[::-1]
    for name in order:
      fn = sides[name]
      if getattr(fn, "child_timed", False):
        results[name].seconds += list(fn())
      else:
        results[name].seconds += [_timed(fn, clock) for _ in range(repeats)]
  return results


def child_timed(fn: Callable[[], Sequence[float]]) -> Callable[[], Sequence[float]]:
  """Marks a side that times itself (warm-up included) and returns its timed runs."""
  fn.child_timed = True
  return fn


def report(timings: Mapping[str, Timings], work: float, unit: str,
           ratio: tuple[str, str] | None = None) -> list[str]:
  """Lines: each side's rate (work per median second) with min / median / spread, then the
  ratio of `ratio[0]` over `ratio[1]` (in speed), of medians and of minimums, or a flag."""
  lines = []
  for name, t in timings.items():
    lines.append(f"{name:14s} {work / t.median:10.4g} {unit}  (min {t.min:.3f}s, median "
                 f"{t.median:.3f}s, spread {t.spread:.0%} over {len(t.seconds)} runs; "
                 f"warm-up {', '.join(f'{s:.2f}' for s in t.warmup) or 'in its process'})")
  if ratio is not None:
    ours, peer = timings[ratio[0]], timings[ratio[1]]
    unsteady = [name for name in ratio if timings[name].spread > SPREAD_LIMIT]
    medians, minimums = peer.median / ours.median, peer.min / ours.min
    if unsteady:
      lines.append(f"ratio {ratio[0]} / {ratio[1]}: UNRELIABLE (spread over "
                   f"{SPREAD_LIMIT:.0%} for {', '.join(unsteady)}: the machine was busy or "
                   f"unsteady; medians {medians:.2f}x, minimums {minimums:.2f}x)")
    else:
      lines.append(f"ratio {ratio[0]} / {ratio[1]}: {medians:.2f}x of medians, "
                   f"{minimums:.2f}x of minimums")
  return lines
