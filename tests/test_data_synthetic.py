"""The simulated population: text it writes reads back right, and its groups behave like groups."""
import numpy as np
import pytest

from consensus_jax.data import considerations
from consensus_jax.data import population
from consensus_jax.data import question_bank
from consensus_jax.data import records
from consensus_jax.data import statement_features
from consensus_jax.data import statement_writer
from consensus_jax.data import synthetic

NUM_GROUPS = 300


@pytest.fixture(scope="module")
def questions(shared_data_dir):
  return question_bank.load_questions(shared_data_dir / "questions" / "questions.json")


@pytest.fixture(scope="module")
def question(questions):
  return next(q for q in questions if q.text == "Should we continue to fund our armed forces?")


@pytest.fixture(scope="module")
def train_rounds(questions):
  return list(synthetic.generate_split(questions, "train", NUM_GROUPS, seed=7))


def _ratings_MC(round_):
  return np.array([[round_.agreement[p][c] for c in round_.candidate_ids]
                   for p in round_.participant_ids])


def test_question_bank_splits(questions):
  by_split = question_bank.questions_by_split(questions)
  assert {s: len(v) for s, v in by_split.items()} == {
      "train": 4500, "iid_test": 565, "ood_test": 580}
  train_topics = {q.topic for q in by_split["train"]}
  assert not train_topics & {q.topic for q in by_split["ood_test"]}


@pytest.mark.parametrize("k", range(considerations.NUM_CONSIDERATIONS))
def test_every_consideration_phrase_reads_back_with_its_direction(question, k):
  consideration = considerations.CONSIDERATIONS[k]
  for phrases, valence in ((consideration.pro_phrases, 1), (consideration.con_phrases, -1),
                           (consideration.neutral_phrases, 0)):
    for phrase in phrases:
      features = statement_features.parse_statement(question, phrase)
      assert features.mentioned_K[k], phrase
      assert features.valence_K[k] == valence, phrase
      others = np.delete(features.mentioned_K, k)
      assert not others.any(), f"{phrase!r} also cues {np.flatnonzero(features.mentioned_K)}"


def test_written_stance_reads_back(question):
  rng = np.random.default_rng(0)
  for stance, expected in ((0.9, 1.0), (0.5, 0.7), (0.2, 0.4), (0.0, 0.0), (-0.2, -0.4),
                           (-0.5, -0.7), (-0.95, -1.0)):
    for voice in ("I", "We"):
      text = statement_writer.write_statement(question, stance, [], voice=voice, rng=rng)
      assert statement_features.parse_statement(question, text).stance == pytest.approx(
          expected), text


def test_rater_reads_free_text_not_just_templates(question):
  members = [population.Member("pro", 0.9, np.eye(10)[3], np.ones(10, np.int8), 0.0),
             population.Member("con", -0.9, np.eye(10)[1], -np.ones(10, np.int8), 0.0)]
  texts = ["Yes: we must keep funding our armed forces, it protects people.",
           "I oppose continuing to fund the armed forces; it is a costly waste of money.",
           "My cat likes sunny windowsills."]
  utility_MC = population.expected_utilities(question, members, texts)
  assert utility_MC[0, 0] > utility_MC[0, 1] + 2  # the pro member prefers the pro text
  assert utility_MC[1, 1] > utility_MC[1, 0] + 2
  assert utility_MC[:, 2].max() < utility_MC[:, :2].max(1).min() - 2  # off topic is disliked
  repetitive = " ".join(["armed forces funding"] * 20)
  rambling = statement_features.parse_statement(question, repetitive)
  assert rambling.distinct_word_ratio < 0.4


def test_generation_is_deterministic_and_per_round(questions):
  first = list(synthetic.generate_split(questions, "iid_test", 6, seed=3))
  again = list(synthetic.generate_split(questions, "iid_test", 4, seed=3))
  other = list(synthetic.generate_split(questions, "iid_test", 6, seed=4))
  assert first[:4] == again
  assert [r.candidates for r in first] != [r.candidates for r in other]


def test_rounds_have_the_promised_shape(train_rounds):
  for round_ in train_rounds[:50]:
    assert 3 <= len(round_.opinions) <= 5
    assert len(round_.candidates) == synthetic.NUM_CANDIDATES
    assert round_.question.split == "train"
    ratings_MC = _ratings_MC(round_)  # every member rated every candidate
    for i, participant in enumerate(round_.participant_ids):
      order = [round_.candidate_ids.index(tier[0]) for tier in round_.rankings[participant]]
      assert sorted(order) == list(range(synthetic.NUM_CANDIDATES))
      # A ranking never puts a lower-rated candidate above a higher-rated one.
      assert np.all(np.diff(ratings_MC[i, order]) <= 0)
    members = synthetic.members_from_round(round_)
    assert [m.id for m in members] == round_.participant_ids


def test_groups_disagree(train_rounds):
  """(i) Members of a group rate the same statement differently."""
  spreads = []
  strongly_split = 0
  for round_ in train_rounds:
    ratings_MC = _ratings_MC(round_)
    range_C = ratings_MC.max(0) - ratings_MC.min(0)
    spreads.append(range_C.mean())
    strongly_split += (range_C >= 3).any()
  assert np.mean(spreads) >= 1.5
  assert strongly_split / len(train_rounds) >= 0.6


def test_consensus_beats_best_single_opinion(train_rounds):
  """(ii) A statement covering several members' concerns earns more than the best opinion."""
  margins = []
  for g, round_ in enumerate(train_rounds):
    rng = np.random.default_rng(g)
    members = synthetic.members_from_round(round_)
    texts = [o.text for o in round_.opinions]
    texts.append(synthetic.write_consensus(round_.question, members, rng))
    ratings_MT, _ = population.rate(round_.question, members, texts, rng)
    welfare_T = ratings_MT.mean(0)
    margins.append(welfare_T[-1] - welfare_T[:-1].max())
  margins = np.array(margins)
  assert np.mean(margins > 0) >= 0.6
  assert margins.mean() > 0.25


def test_utilitarian_and_rawlsian_choices_differ(train_rounds):
  """(iii) Mean and min welfare pick different candidates in a visible share of groups."""
  differ = 0
  for round_ in train_rounds:
    ratings_MC = _ratings_MC(round_).astype(float)
    mean_C, min_C = ratings_MC.mean(0), ratings_MC.min(0)
    utilitarian = int(np.argmax(mean_C))
    rawlsian = max(range(len(min_C)), key=lambda c: (min_C[c], mean_C[c], -c))  # leximin
    differ += utilitarian != rawlsian
  assert differ / len(train_rounds) >= 0.10


def test_dataset_files_follow_question_splits(tmp_path, questions):
  paths = synthetic.generate_dataset(
      tmp_path, {"train": 5, "iid_test": 3, "ood_test": 3}, seed=1, questions=questions)
  ood_topics = {q.topic for q in questions if q.split == "ood_test"}
  for split, path in paths.items():
    rounds = records.read_jsonl(path)
    assert len(rounds) == {"train": 5, "iid_test": 3, "ood_test": 3}[split]
    assert {r.question.split for r in rounds} == {split}
    assert all((r.question.topic in ood_topics) == (split == "ood_test") for r in rounds)
    for round_ in rounds:  # the SFT target is the top-rated candidate
      mean_C = _ratings_MC(round_).mean(0)
      assert mean_C[round_.candidate_ids.index(round_.best_candidate_id())] == mean_C.max()


def test_cli_writes_all_splits(tmp_path, capsys):
  synthetic.main([f"--out_dir={tmp_path}", "--num_groups=4", "--num_eval_groups=2", "--seed=5"])
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "iid_test.jsonl", "ood_test.jsonl", "train.jsonl"]
  assert len(records.read_jsonl(tmp_path / "train.jsonl")) == 4
  assert "train: 4 rounds" in capsys.readouterr().out
