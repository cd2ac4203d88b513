"""seqio tasks + feature converters: keys, shapes, loss masks and score positions, packed or not."""
import numpy as np
import pytest
import seqio

from consensus_jax.data import examples
from consensus_jax.data import feature_converters
from consensus_jax.data import prompts
from consensus_jax.data import question_bank
from consensus_jax.data import records
from consensus_jax.data import synthetic
from consensus_jax.data import tasks
from consensus_jax.data import vocab

SFT_LENGTHS = {"inputs": 256, "targets": 96}  # trims the longer examples
SFT_PACKED_LENGTHS = {"inputs": 512, "targets": 256}  # fits two of the shorter ones
RM_LENGTHS = {"inputs": 128, "targets": 160}
PAIR_LENGTHS = {"inputs": 128, "chosen": 160, "rejected": 160}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data_dir):
  del shared_data_dir  # ensures the bundled questions are there
  directory = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(directory, {"train": 12, "iid_test": 3, "ood_test": 3}, seed=11)
  return directory


@pytest.fixture(scope="module")
def vocabulary(data_dir, tmp_path_factory):
  texts = [t for q in question_bank.load_questions() for t in (q.text, q.affirming_statement)]
  for round_ in records.read_jsonl(data_dir / "train.jsonl"):
    texts += [round_.question.text] + [o.text for o in round_.opinions]
    texts += [c.text for c in round_.candidates]
  model = vocab.train_sentencepiece(texts, tmp_path_factory.mktemp("sp") / "small.model",
                                    vocab_size=2000)
  return vocab.load_vocabulary(model)


@pytest.fixture(scope="module")
def registered(data_dir, vocabulary, shared_data_dir):
  return tasks.register_tasks(data_dir, vocabulary, polis_dir=shared_data_dir / "polis")


def _rows(task, lengths, converter, split="train", limit=None):
  ds = seqio.get_dataset(task, lengths, converter, dataset_split=split)
  if limit:
    ds = ds.take(limit)
  return list(ds.as_numpy_iterator())


def _segments(segment_ids):
  return [np.flatnonzero(segment_ids == s) for s in range(1, segment_ids.max() + 1)]


def test_registration_is_idempotent(registered, data_dir, vocabulary, shared_data_dir):
  assert set(registered) == {tasks.SFT_TASK, tasks.RM_RATINGS_TASK, tasks.RM_PAIRWISE_TASK,
                             tasks.RM_LISTS_TASK, tasks.RM_POLIS_TASK,
                             tasks.RM_POINTWISE_MIXTURE}
  again = tasks.register_tasks(data_dir, vocabulary, polis_dir=shared_data_dir / "polis")
  assert again == registered
  assert set(seqio.get_mixture_or_task(tasks.SFT_TASK).splits) == {
      "train", "iid_test", "ood_test"}


@pytest.mark.parametrize("pack,lengths", [(False, SFT_LENGTHS), (True, SFT_PACKED_LENGTHS)])
def test_sft_loss_only_on_target_tokens(registered, data_dir, vocabulary, pack, lengths):
  del registered
  rows = _rows(tasks.SFT_TASK, lengths, feature_converters.SFTFeatureConverter(pack=pack))
  length = sum(lengths.values())
  assert set(rows[0]) == {"decoder_input_tokens", "decoder_target_tokens",
                          "decoder_loss_weights", "decoder_segment_ids", "decoder_positions"}
  # Over-long prompts are cut at the end; targets are cut before their EOS, which stays.
  expected = {(tuple(vocabulary.encode(e["inputs"])[:lengths["inputs"]]),
               tuple(vocabulary.encode(e["targets"])[:lengths["targets"] - 1])
               + (vocabulary.eos_id,))
              for e in examples.sft_examples(records.iter_jsonl(data_dir / "train.jsonl"))}
  found = set()
  for row in rows:
    for key, value in row.items():
      assert value.shape == (length,) and value.dtype == np.int32, key
    for index in _segments(row["decoder_segment_ids"]):
      tokens = row["decoder_target_tokens"][index]
      weights = row["decoder_loss_weights"][index]
      num_prompt = int(np.argmax(weights))
      assert not weights[:num_prompt].any() and weights[num_prompt:].all()
      found.add((tuple(tokens[:num_prompt].tolist()), tuple(tokens[num_prompt:].tolist())))
      assert row["decoder_positions"][index].tolist() == list(range(len(index)))
      inputs = row["decoder_input_tokens"][index]
      assert inputs[0] == 0 and np.array_equal(inputs[1:], tokens[:-1])
    padding = row["decoder_segment_ids"] == 0
    assert not row["decoder_loss_weights"][padding].any()
    assert not row["decoder_target_tokens"][padding].any()
  assert found == expected
  if pack:
    assert max(r["decoder_segment_ids"].max() for r in rows) >= 2
    assert len(rows) < len(expected)


def _check_score_positions(row, prefix=""):
  """One weight per segment, at its last token (EOS), returning the per-segment targets."""
  targets = []
  for index in _segments(row[f"{prefix}decoder_segment_ids"]):
    weights = row[f"{prefix}score_weights"][index]
    assert weights.dtype == np.float32
    assert weights[-1] == 1.0 and not weights[:-1].any()
    assert row[f"{prefix}decoder_input_tokens"][index[-1]] == 1  # EOS
    assert not row[f"{prefix}score_targets"][index[:-1]].any()
    targets.append(float(row[f"{prefix}score_targets"][index[-1]]))
  padding = row[f"{prefix}decoder_segment_ids"] == 0
  assert not row[f"{prefix}score_weights"][padding].any()
  return targets


@pytest.mark.parametrize("pack", [False, True])
def test_rm_scores_exactly_once_per_example_at_its_last_token(registered, data_dir, vocabulary,
                                                              pack):
  del registered
  rows = _rows(tasks.RM_RATINGS_TASK, RM_LENGTHS,
               feature_converters.RMFeatureConverter(pack=pack))
  length = sum(RM_LENGTHS.values())
  assert set(rows[0]) == {"decoder_input_tokens", "decoder_segment_ids", "decoder_positions",
                          "score_weights", "score_targets"}
  assert all(v.shape == (length,) for v in rows[0].values())
  labels = [label for row in rows for label in _check_score_positions(row)]
  expected = [e["label"] for e in examples.rating_examples(
      records.iter_jsonl(data_dir / "train.jsonl"))]
  assert labels == pytest.approx(expected)  # one scored token per rating, in order
  assert set(np.round(np.array(labels) * 6).astype(int)) <= set(range(7))
  if pack:
    assert max(r["decoder_segment_ids"].max() for r in rows) >= 2
  # The scorer may concatenate cached prefix ids with suffix ids: the same ids as training.
  first = next(examples.rating_examples(records.iter_jsonl(data_dir / "train.jsonl")))
  first_ids = prompts.rm_prefix_ids(vocabulary, first["inputs"]) + prompts.rm_candidate_ids(
      vocabulary, first["targets"].removeprefix("Statement: "))
  segment = _segments(rows[0]["decoder_segment_ids"])[0]
  assert rows[0]["decoder_input_tokens"][segment].tolist() == first_ids


@pytest.mark.parametrize("pack", [False, True])
def test_pairwise_rows_keep_chosen_and_rejected_aligned(registered, data_dir, pack):
  del registered
  rows = _rows(tasks.RM_PAIRWISE_TASK, PAIR_LENGTHS,
               feature_converters.PairwiseRMFeatureConverter(pack=pack))
  names = {"decoder_input_tokens", "decoder_segment_ids", "decoder_positions", "score_weights",
           "score_targets"}
  assert set(rows[0]) == {f"{side}_{n}" for side in ("chosen", "rejected") for n in names}
  num_pairs = 0
  for row in rows:
    for side in ("chosen", "rejected"):
      assert row[f"{side}_decoder_input_tokens"].shape == (288,)
    chosen = _check_score_positions(row, "chosen_")
    rejected = _check_score_positions(row, "rejected_")
    assert len(chosen) == len(rejected)  # segment k of both rows is pair k
    # Rankings follow the same noisy utility as ratings: chosen is never rated lower.
    assert all(c >= r for c, r in zip(chosen, rejected))
    num_pairs += len(chosen)
  expected = list(examples.pairwise_examples(records.iter_jsonl(data_dir / "train.jsonl")))
  assert num_pairs == len(expected) > 0
  if pack:
    assert len(rows) < num_pairs


def test_polis_task_and_pointwise_mixture(registered):
  del registered
  rows = _rows(tasks.RM_POLIS_TASK, {"inputs": 192, "targets": 64},
               feature_converters.RMFeatureConverter(pack=True), split="validation", limit=20)
  labels = [label for row in rows for label in _check_score_positions(row)]
  assert set(labels) <= {0.0, 1.0} and len(set(labels)) == 2
  mixed = seqio.get_dataset(tasks.RM_POINTWISE_MIXTURE, RM_LENGTHS,
                            feature_converters.RMFeatureConverter(pack=False),
                            dataset_split="train", shuffle=True, seed=0)
  batch = next(iter(mixed.batch(8).as_numpy_iterator()))
  assert batch["decoder_input_tokens"].shape == (8, sum(RM_LENGTHS.values()))
  assert (batch["score_weights"].sum(1) == 1.0).all()


def test_batches_have_model_shapes(registered):
  del registered
  ds = seqio.get_dataset(tasks.SFT_TASK, {"inputs": 224, "targets": 32},
                         feature_converters.SFTFeatureConverter(pack=True),
                         dataset_split="iid_test")
  batch = next(iter(ds.batch(2, drop_remainder=True).as_numpy_iterator()))
  assert {k: v.shape for k, v in batch.items()} == {k: (2, 256) for k in batch}


def test_pass_votes_get_the_configured_weight(registered, data_dir, vocabulary, shared_data_dir):
  del registered
  try:
    tasks.register_tasks(data_dir, vocabulary, polis_dir=shared_data_dir / "polis",
                         polis_pass_weight=0.25)
    rows = _rows(tasks.RM_POLIS_TASK, {"inputs": 192, "targets": 64},
                 feature_converters.RMFeatureConverter(pack=False), split="validation",
                 limit=400)
    weights = {float(r["score_weights"].max()) for r in rows}
    targets = {float(r["score_targets"][r["score_weights"] > 0][0]) for r in rows}
    assert weights == {0.25, 1.0} and 0.5 in targets
  finally:
    tasks.register_tasks(data_dir, vocabulary, polis_dir=shared_data_dir / "polis")


def test_rm_prompt_is_prefix_plus_suffix():
  assert prompts.rm_prompt("Q?", "my view", "the statement") == (
      prompts.rm_prefix("Q?", "my view") + prompts.rm_suffix("the statement"))
  prompt = prompts.sft_prompt("Q?", ["first\nopinion", "second"])
  assert prompt.splitlines() == ["Question: Q?", "Opinion 1: first opinion", "Opinion 2: second",
                                 "Consensus statement:"]
