"""The studies' statistics and selections on constructed inputs with known answers."""
import numpy as np
import pytest

from consensus_jax.data import records, synthetic
from consensus_jax.studies import exclusion, head_to_head, judges, rating_rows, rm_peers
from consensus_jax.studies import statistics, systems, welfare_rules


def test_a_system_that_always_wins_has_win_rate_one():
  rng = np.random.default_rng(0)
  worse_G = rng.uniform(1, 6, 50)
  share, (low, high) = statistics.win_share(worse_G + 0.5, worse_G)
  assert share == 1.0 and high == 1.0 and 0.9 < low < 1.0
  share, _ = statistics.win_share(worse_G, worse_G)
  assert share == 0.5  # every group a tie
  rates, _ = statistics.win_rate_matrix(np.stack([worse_G + 1, worse_G, worse_G - 1]),
                                        ["a", "b", "c"])
  assert rates["a"]["b"] == rates["a"]["c"] == rates["b"]["c"] == 1.0
  assert rates["c"]["a"] == 0.0


@pytest.mark.parametrize("p", [0.5, 0.75])
def test_win_rate_intervals_cover_the_truth_at_about_the_nominal_rate(p):
  rng = np.random.default_rng(1)
  covered = 0
  trials = 2000
  for _ in range(trials):
    wins = rng.random(100) < p
    _, (low, high) = statistics.win_share(wins.astype(float), np.full(100, 0.5))
    covered += low <= p <= high
  assert 0.93 <= covered / trials <= 0.97


def test_paired_effect_intervals_cover_the_mean_at_about_the_nominal_rate():
  rng = np.random.default_rng(2)
  covered = sum(
      (lambda e: e["ci_low"] <= 0.3 <= e["ci_high"])(
          statistics.paired_effect(rng.normal(0.3, 1.0, 40))) for _ in range(2000))
  assert 0.93 <= covered / 2000 <= 0.97


def _fake_exclusion(rng, groups, effect):
  """Judged agreement of 3-5 members with two statements; the left-out member loses `effect`
  under the statement built without them, everyone else is unaffected (on average)."""
  members = 5
  mask = np.zeros((groups, members), bool)
  sizes = rng.integers(3, 6, groups)
  for g, size in enumerate(sizes):
    mask[g, :size] = True
  base = rng.normal(4.5, 1.0, (groups, members))
  judged_all = base + rng.normal(0, 0.7, (groups, members))
  judged_without = base + rng.normal(0, 0.7, (groups, members))
  left_out = np.array([rng.integers(size) for size in sizes])
  judged_without[np.arange(groups), left_out] -= effect
  return judged_all, judged_without, left_out, mask


def test_a_planted_exclusion_effect_is_found():
  rng = np.random.default_rng(3)
  result = exclusion.analyse(*_fake_exclusion(rng, 80, effect=0.8))
  assert result["effect"]["p_value"] < 0.01
  assert result["effect"]["ci_low"] > 0.3 and result["effect"]["ci_high"] < 1.3
  assert result["left_out_member"]["change"]["mean"] < -0.4
  assert abs(result["included_members"]["change"]["mean"]) < 0.3


def test_a_null_exclusion_effect_is_found_at_about_the_nominal_rate():
  rng = np.random.default_rng(4)
  p_values = [exclusion.analyse(*_fake_exclusion(rng, 60, effect=0.0))["effect"]["p_value"]
              for _ in range(400)]
  false_positives = np.mean(np.array(p_values) < 0.05)
  assert 0.02 <= false_positives <= 0.09


def _outputs(rng, groups=6, samples=5, members=3):
  return [systems.GroupOutputs(
      round_id=f"g{g}", samples=[f"s{n}" for n in range(samples)],
      sample_valid_N=np.ones(samples, bool),
      rm_samples_NM=rng.uniform(0.1, 0.9, (samples, members)),
      rm_opinions_OM=rng.uniform(0.1, 0.9, (members, members))) for g in range(groups)]


def test_systems_pick_what_their_rules_say():
  rng = np.random.default_rng(5)
  outputs = _outputs(rng)
  outputs[0].sample_valid_N[2] = False
  outputs[0].rm_samples_NM[2] = 1.0  # the RM's favourite, but not a valid sample
  judged_samples = [rng.integers(1, 8, (3, 5)).astype(float) for _ in outputs]
  judged_opinions = [rng.integers(1, 8, (3, 3)).astype(float) for _ in outputs]
  choices = systems.choose(outputs, judged_samples, judged_opinions, seed=0)
  assert set(choices) == set(systems.SYSTEMS)
  for g, out in enumerate(outputs):
    welfare_N = np.where(out.sample_valid_N, out.rm_samples_NM.mean(axis=1), -np.inf)
    assert choices["rm_utilitarian"][g] == ("sample", int(np.argmax(welfare_N)))
    rawls_N = np.where(out.sample_valid_N, out.rm_samples_NM.min(axis=1), -np.inf)
    assert choices["rm_rawlsian"][g] == ("sample", int(np.argmax(rawls_N)))
    assert choices["best_predicted_opinion"][g] == (
        "opinion", int(np.argmax(out.rm_opinions_OM.mean(axis=1))))
    judged_N = np.where(out.sample_valid_N, judged_samples[g].mean(axis=0), -np.inf)
    assert choices["judge_best_of_n"][g] == ("sample", int(np.argmax(judged_N)))
    assert choices["best_opinion_hindsight"][g] == (
        "opinion", int(np.argmax(judged_opinions[g].mean(axis=0))))
  ratings = head_to_head.chosen_ratings(choices, judged_samples, judged_opinions)
  summary = head_to_head.summarize(ratings)
  # The judge's own pick among the samples is never beaten by another sample on its mean.
  for name in ("sft_sample", "rm_utilitarian", "rm_rawlsian", "rm_nash", "rm_schulze"):
    assert summary["win_rate"][name]["judge_best_of_n"] <= 0.5
    assert (summary["mean_agreement"]["judge_best_of_n"]["mean"] >=
            summary["mean_agreement"][name]["mean"])
  assert summary["groups"] == len(outputs)
  # An RM whose utilities are the judge's own ratings orders every judged pair right.
  for g, out in enumerate(outputs):
    out.rm_samples_NM = judged_samples[g].T / 7.0
    out.sample_valid_N[:] = True
  assert head_to_head.rm_ranking_of_samples(outputs, judged_samples)["pairwise_accuracy"] == 1.0


def test_welfare_study_reports_rawlsian_no_worse_for_the_worst_off_by_prediction():
  rng = np.random.default_rng(6)
  outputs = _outputs(rng, groups=20)
  judged = [1 + 6 * o.rm_samples_NM.T for o in outputs]  # a judge that agrees with the RM
  result = welfare_rules.analyse(outputs, judged, rules=("utilitarian", "rawlsian"))
  per_rule = result["per_rule"]
  assert per_rule["rawlsian"]["predicted_worst_off"] >= per_rule["utilitarian"][
      "predicted_worst_off"]
  assert per_rule["utilitarian"]["predicted_mean"] >= per_rule["rawlsian"]["predicted_mean"]
  differ = np.mean([np.argmax(o.rm_samples_NM.mean(1)) != np.argmax(o.rm_samples_NM.min(1))
                    for o in outputs])
  assert 0 < differ < 1  # these random groups have both kinds
  assert result["winners_differ"]["utilitarian"]["rawlsian"] == pytest.approx(differ)


@pytest.fixture(scope="module")
def rounds(shared_data_dir, tmp_path_factory):
  del shared_data_dir
  directory = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(directory, {"train": 120, "iid_test": 12}, seed=7)
  return records.read_jsonl(directory / "train.jsonl"), records.read_jsonl(
      directory / "iid_test.jsonl")


def test_peers_and_ceiling_are_scored_on_exactly_the_rm_rows(rounds):
  train, test = rounds
  rows = rating_rows.collect(test)
  expected = sum(len(ratings) for r in test for ratings in r.agreement.values())
  assert len(rows) == expected
  peer = rm_peers.fit_bag_of_words(train, max_rows=None)
  references = rm_peers.reference_metrics(rows, peer)
  rm_like = rating_rows.metrics(rows, rows.rating_R + np.random.default_rng(0).normal(
      0, 0.1, len(rows)))
  for name in ("bag_of_words", "other_members", "simulator_ceiling", "opinion_reader"):
    assert references[name]["rows"] == rm_like["rows"] == expected
    assert references[name]["pairs"] == rm_like["pairs"]
  # The ceiling is the simulator's expected utilities, which the noisy ratings follow.
  assert 0.8 < references["simulator_ceiling"]["pairwise_accuracy"] < 0.97
  # Reading only the opinion loses the unnamed concerns and the bias, not the stance.
  reader = references["opinion_reader"]["pairwise_accuracy"]
  assert 0.75 < reader < references["simulator_ceiling"]["pairwise_accuracy"]
  # Even from 120 rounds the bag-of-words peer learns something about members.
  assert references["bag_of_words"]["pairwise_accuracy"] > 0.6


def test_bag_of_words_learns_a_planted_member_candidate_interaction():
  question = records.Question("q", "Which fruit?", 0, "train")
  fruits = ["apples", "pears", "plums", "grapes"]
  rng = np.random.default_rng(8)

  def round_(i):
    likes = rng.choice(fruits, 3, replace=False)
    opinions = tuple(records.Opinion(f"p{m}", f"I like {f} a lot") for m, f in enumerate(likes))
    candidates = tuple(records.Candidate(f"c{n}", f"We choose {f} today", "model")
                       for n, f in enumerate(fruits))
    agreement = {f"p{m}": {f"c{n}": 7 if fruits[n] == like else 2 for n in range(4)}
                 for m, like in enumerate(likes)}
    return records.Round(f"r{i}", question, opinions, candidates, agreement)

  peer = rm_peers.fit_bag_of_words([round_(i) for i in range(60)], max_rows=None, l2=1.0)
  rows = rating_rows.collect([round_(i) for i in range(60, 80)])
  assert rating_rows.metrics(rows, peer.predict(rows))["pairwise_accuracy"] > 0.95


def test_judges_rate_a_text_the_same_whatever_it_is_judged_with(rounds):
  _, test = rounds
  round_ = test[0]
  texts = [c.text for c in round_.candidates]
  alone = judges.PRIMARY.rate(round_, texts[:1])
  together = judges.PRIMARY.rate(round_, texts)
  np.testing.assert_array_equal(alone[:, 0], together[:, 0])
  assert together.shape == (len(round_.opinions), len(texts))
  assert set(np.unique(together)) <= set(range(1, 8))
  perturbed = judges.PERTURBED.rate(round_, texts)
  assert not np.array_equal(perturbed, together)
  # Both judges read the same people: their ratings agree far more than chance.
  assert np.corrcoef(perturbed.ravel(), together.ravel())[0, 1] > 0.5
