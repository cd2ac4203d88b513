"""tfds_deliberation.py: builds a TFDS dataset from JSONL rounds, and the tasks can read it."""
import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from consensus_jax.data import feature_converters
from consensus_jax.data import records
from consensus_jax.data import synthetic
from consensus_jax.data import tasks
from consensus_jax.data import tfds_deliberation
from consensus_jax.data import vocab


@pytest.fixture(scope="module")
def jsonl_dir(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  directory = tmp_path_factory.mktemp("jsonl")
  synthetic.generate_dataset(directory, {"train": 6, "iid_test": 2}, seed=2)
  # A hand-written round with ties, partial ratings and quality ratings.
  tied = records.round_from_dict({
      "id": "team-1",
      "question": {"id": "q", "text": "Should parks open later?", "topic": 1, "split": "train"},
      "opinions": [{"participant_id": "a", "text": "Yes."}, {"participant_id": "b", "text": "No."}],
      "candidates": [{"id": "x", "text": "Open later in summer.", "provenance": "human"},
                     {"id": "y", "text": "Keep hours.", "provenance": "model"}],
      "agreement": {"a": {"x": 6}, "b": {"x": 4, "y": 5}},
      "quality": {"a": {"y": 3}},
      "rankings": {"a": ["x", "y"], "b": [["x", "y"]]}})
  records.write_jsonl(directory / "ood_test.jsonl", [tied])
  return directory


def _by_id(rounds):
  return sorted(rounds, key=lambda r: r.id)


def test_builds_from_config_path(jsonl_dir, tmp_path):
  builder = tfds_deliberation.DeliberationRounds(
      config=tfds_deliberation.DeliberationConfig(name="team", jsonl_dir=str(jsonl_dir)),
      data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare()
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      "train": 6, "iid_test": 2, "ood_test": 1}
  (example,) = builder.as_dataset(split="ood_test").as_numpy_iterator()
  assert example["id"] == b"team-1"
  assert example["candidates"]["provenance"].tolist() == [b"human", b"model"]
  assert example["agreement"].tolist() == [[6, 0], [4, 5]]  # 0 = not rated
  assert example["quality"].tolist() == [[0, 3], [0, 0]]
  assert example["ranks"].tolist() == [[0, 1], [0, 0]]  # b ties x and y

  rounds = tfds_deliberation.tfds_rounds("deliberation_rounds/team", str(tmp_path / "tfds"))
  for split in ("train", "iid_test", "ood_test"):
    assert _by_id(rounds(split)) == _by_id(records.read_jsonl(jsonl_dir / f"{split}.jsonl"))


def test_cli_builds_from_manual_dir_and_feeds_the_tasks(jsonl_dir, tmp_path, capsys):
  data_dir = str(tmp_path / "tfds")
  tfds_deliberation.main([f"--jsonl_dir={jsonl_dir}", f"--data_dir={data_dir}"])
  assert "deliberation_rounds/default/1.0.0 train: 6 rounds" in capsys.readouterr().out
  builder = tfds.builder("deliberation_rounds", data_dir=data_dir)
  assert builder.info.splits["train"].num_examples == 6

  texts = [r.question.text for r in records.read_jsonl(jsonl_dir / "train.jsonl")]
  texts += [c.text for r in records.read_jsonl(jsonl_dir / "train.jsonl") for c in r.candidates]
  model = vocab.train_sentencepiece(texts, tmp_path / "sp.model", vocab_size=600)
  vocabulary = vocab.load_vocabulary(model)
  tasks.register_tasks(tfds_deliberation.tfds_rounds("deliberation_rounds", data_dir),
                       vocabulary)
  ds = seqio.get_dataset(tasks.SFT_TASK, {"inputs": 512, "targets": 256},
                         feature_converters.SFTFeatureConverter(pack=False),
                         dataset_split="train")
  rows = list(ds.as_numpy_iterator())
  assert len(rows) == 6
  assert all(np.any(r["decoder_loss_weights"]) for r in rows)


def test_missing_jsonl_files_fail_clearly(tmp_path):
  builder = tfds_deliberation.DeliberationRounds(
      config=tfds_deliberation.DeliberationConfig(name="empty", jsonl_dir=str(tmp_path)),
      data_dir=str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match=r"no <split>\.jsonl files"):
    builder.download_and_prepare()
