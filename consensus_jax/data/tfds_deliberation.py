"""TFDS builder for deliberation rounds stored as JSONL (records.py), e.g. a team's own data.

Put <split>.jsonl files (any of train, iid_test, ood_test, validation, test) in a folder and
build with this module's CLI (same effect as the tfds CLI, which in TFDS 4.9.10 cannot start
without apache-beam installed):

  python -m consensus_jax.data.tfds_deliberation --jsonl_dir=/path/to/jsonl \
      --data_dir=/path/to/tfds [--config_name=mine]

  tfds build consensus_jax/data/tfds_deliberation.py --manual_dir=/path/to/jsonl \
      --data_dir=/path/to/tfds          # where apache-beam is installed

or point a builder config at it in code: DeliberationRounds(config=DeliberationConfig(
name="mine", jsonl_dir="/path/to/jsonl"), data_dir=...). Then feed the built dataset to the
seqio tasks with tasks.register_tasks(tfds_rounds("deliberation_rounds/mine", data_dir), vocab).

Each example keeps the exact record (record_json, for lossless use by the tasks) and
structured features for inspection: agreement / quality as [participants, candidates] int32
(0 = not rated) and ranks as [participants, candidates] int32 (tier index, 0 = best; -1 = not
ranked).
"""
import argparse
import dataclasses
import importlib.resources
import importlib.util
import json
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

# TFDS 4.9.10 imports the `importlib_resources` backport when building, but only declares it
# for Python < 3.9 (tensorflow/datasets#11212). Its stdlib successor has the same API here.
if importlib.util.find_spec("importlib_resources") is None:
  sys.modules.setdefault("importlib_resources", importlib.resources)

from consensus_jax.data import records

_SPLITS = ("train", "iid_test", "ood_test", "validation", "test")


@dataclasses.dataclass
class DeliberationConfig(tfds.core.BuilderConfig):
  jsonl_dir: str | None = None  # None: read from the download config's manual_dir


def _matrix(round_: records.Round, values, missing: int) -> np.ndarray:
  matrix_PC = np.full((len(round_.opinions), len(round_.candidates)), missing, np.int32)
  columns = {c: j for j, c in enumerate(round_.candidate_ids)}
  for i, participant_id in enumerate(round_.participant_ids):
    for candidate_id, value in (values or {}).get(participant_id, {}).items():
      matrix_PC[i, columns[candidate_id]] = value
  return matrix_PC


def _tier_index(round_: records.Round) -> dict[str, dict[str, int]]:
  return {p: {c: tier for tier, ids in enumerate(ranking) for c in ids}
          for p, ranking in (round_.rankings or {}).items()}


def round_to_example(round_: records.Round) -> dict:
  question = round_.question
  return {
      "id": round_.id,
      "question": {"id": question.id, "text": question.text, "topic": question.topic,
                   "split": question.split,
                   "affirming_statement": question.affirming_statement,
                   "negating_statement": question.negating_statement},
      "opinions": [{"participant_id": o.participant_id, "text": o.text}
                   for o in round_.opinions],
      "candidates": [{"id": c.id, "text": c.text, "provenance": c.provenance}
                     for c in round_.candidates],
      "agreement": _matrix(round_, round_.agreement, 0),
      "quality": _matrix(round_, round_.quality, 0),
      "ranks": _matrix(round_, _tier_index(round_), -1),
      "record_json": json.dumps(records.round_to_dict(round_), ensure_ascii=False),
  }


class DeliberationRounds(tfds.core.GeneratorBasedBuilder):
  """Deliberation rounds: question, opinions, candidates, ratings and rankings."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [DeliberationConfig(name="default")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put <split>.jsonl files written by consensus_jax.data.records.write_jsonl in the "
      "manual dir (or set DeliberationConfig.jsonl_dir).")

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    matrix = tfds.features.Tensor(shape=(None, None), dtype=np.int32, encoding="zlib")
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "id": text,
            "question": {"id": text, "text": text, "topic": np.int32, "split": text,
                         "affirming_statement": text, "negating_statement": text},
            "opinions": tfds.features.Sequence({"participant_id": text, "text": text}),
            "candidates": tfds.features.Sequence(
                {"id": text, "text": text, "provenance": text}),
            "agreement": matrix,
            "quality": matrix,
            "ranks": matrix,
            "record_json": text,
        }),
        supervised_keys=None)

  def _jsonl_dir(self, dl_manager) -> pathlib.Path:
    if self.builder_config.jsonl_dir:
      return pathlib.Path(self.builder_config.jsonl_dir)
    return pathlib.Path(dl_manager.manual_dir)

  def _split_generators(self, dl_manager):
    jsonl_dir = self._jsonl_dir(dl_manager)
    found = {split: jsonl_dir / f"{split}.jsonl" for split in _SPLITS
             if (jsonl_dir / f"{split}.jsonl").is_file()}
    if not found:
      raise FileNotFoundError(f"{jsonl_dir}: no <split>.jsonl files (splits: {_SPLITS})")
    return {split: self._generate_examples(path) for split, path in found.items()}

  def _generate_examples(self, path: pathlib.Path):
    for round_ in records.iter_jsonl(path):
      yield round_.id, round_to_example(round_)


def tfds_rounds(name: str, data_dir: str | None = None):
  """split -> rounds read back from a built TFDS dataset (e.g. 'deliberation_rounds/mine')."""
  def rounds(split: str):
    dataset = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    for index, example in enumerate(dataset.as_numpy_iterator()):
      yield records.round_from_dict(json.loads(example["record_json"].decode("utf-8")),
                                    where=f"{name}[{split}] example {index}")
  return rounds


def build(jsonl_dir: str, data_dir: str, config_name: str = "default") -> tfds.core.DatasetInfo:
  """Builds deliberation_rounds/<config_name> from <jsonl_dir>/<split>.jsonl into data_dir."""
  if config_name == "default":
    builder = DeliberationRounds(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=jsonl_dir))
  else:
    builder = DeliberationRounds(
        config=DeliberationConfig(name=config_name, jsonl_dir=jsonl_dir), data_dir=data_dir)
    builder.download_and_prepare()
  return builder.info


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Build the deliberation_rounds TFDS dataset.")
  parser.add_argument("--jsonl_dir", required=True)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--config_name", default="default")
  args = parser.parse_args(argv)
  info = build(args.jsonl_dir, args.data_dir, args.config_name)
  for name, split in info.splits.items():
    print(f"{info.full_name} {name}: {split.num_examples} rounds")


if __name__ == "__main__":
  main()
