"""benchmarks/timing: the method every CPU benchmark times its two sides by (a fake clock, no
timing of real work)."""
import pytest

from benchmarks import timing


class FakeClock:
  """Each call of a side advances time by that side's next scripted duration."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now

  def side(self, name, durations, calls):
    durations = iter(durations)

    def run():
      calls.append(name)
      self.now += next(durations)
    return run


def test_warm_up_runs_until_two_consecutive_runs_agree():
  clock, calls = FakeClock(), []
  runs = timing.warm_up(clock.side("a", [5.0, 2.0, 1.5, 1.45, 9.0], calls), clock=clock)
  assert runs == pytest.approx([5.0, 2.0, 1.5, 1.45])  # 1.5 vs 1.45 agree within 10%
  assert len(timing.warm_up(clock.side("b", [1.0, 1.0, 1.0], []), clock=clock)) == 2
  assert len(timing.warm_up(clock.side("c", [1.0, 2.0] * 10, []), clock=clock,
                            max_runs=6)) == 6


def test_sides_alternate_and_are_summarised_by_min_median_spread():
  clock, calls = FakeClock(), []
  sides = {"ours": clock.side("ours", [3.0, 1.0, 1.0] + [1.0, 1.1, 0.9, 1.0, 1.0, 1.0], calls),
           "peer": clock.side("peer", [2.0, 2.0] + [2.0] * 6, calls)}
  result = timing.compare(sides, rounds=3, repeats=2, clock=clock)
  timed_order = calls[5:]  # after the warm-ups (3 + 2 runs)
  assert timed_order == ["ours"] * 2 + ["peer"] * 4 + ["ours"] * 4 + ["peer"] * 2
  ours = result["ours"]
  assert ours.warmup == pytest.approx([3.0, 1.0, 1.0])
  assert (ours.min, ours.median) == pytest.approx((0.9, 1.0))
  assert ours.spread == pytest.approx(0.2)
  lines = timing.report(result, work=100.0, unit="tokens/s", ratio=("ours", "peer"))
  assert lines[-1] == "ratio ours / peer: 2.00x of medians, 2.22x of minimums"
  assert " 100 tokens/s" in lines[0] and "spread 20%" in lines[0]


def test_a_spread_over_25_percent_makes_the_ratio_unreliable():
  clock = FakeClock()
  sides = {"ours": clock.side("ours", [1.0, 1.0, 1.0, 1.5, 1.0, 1.0], []),
           "peer": timing.child_timed(lambda: [2.0, 2.0])}
  result = timing.compare(sides, rounds=2, repeats=2, clock=clock)
  assert result["peer"].seconds == [2.0] * 4 and result["peer"].warmup == []
  line = timing.report(result, work=1.0, unit="x/s", ratio=("ours", "peer"))[-1]
  assert line.startswith("ratio ours / peer: UNRELIABLE (spread over 25% for ours")
