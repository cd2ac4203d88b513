"""seqio Tasks and Mixtures for SFT and reward modelling, registered by register_tasks().

Tasks (their splits are the evaluation sets too):
  consensus_sft_synthetic          inputs, targets                    train / iid_test / ood_test
  consensus_rm_synthetic_ratings   inputs, targets, label, weight     train / iid_test / ood_test
  consensus_rm_synthetic_pairwise  inputs, chosen, rejected,
                                   chosen_label, rejected_label       train / iid_test / ood_test
  consensus_rm_synthetic_lists     inputs, targets (every candidate's  train / iid_test / ood_test
                                   ids + EOS, one after another),
                                   candidate_lengths, labels
  consensus_rm_polis               inputs, targets, label, weight     train / heldout_participants
                                                                      / validation
  consensus_rm_polis_votes         inputs, targets, label, weight     train / heldout_participants
                                   (Polis only; register_polis_votes_  / heldout_conversations
                                   task: both modes, chosen conversations)
Mixtures:
  consensus_rm_pointwise           synthetic ratings + Polis votes (splits shared by both: train)

Use with feature_converters: SFTFeatureConverter, RMFeatureConverter,
PairwiseRMFeatureConverter, RMListFeatureConverter. "inputs" is the prompt or the RM's member prefix (no EOS);
"targets" / "chosen" / "rejected" end with EOS, and the RM score is read at that EOS. The
rounds come from JSONL files (<dir>/<split>.jsonl, records.py) or any callable split -> rounds,
e.g. tfds_deliberation.rounds_from_tfds.
"""
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence

import seqio
import tensorflow as tf

from consensus_jax.data import examples as examples_lib
from consensus_jax.data import polis
from consensus_jax.data import prompts
from consensus_jax.data import question_bank
from consensus_jax.data import records

SFT_TASK = "consensus_sft_synthetic"
RM_RATINGS_TASK = "consensus_rm_synthetic_ratings"
RM_PAIRWISE_TASK = "consensus_rm_synthetic_pairwise"
RM_LISTS_TASK = "consensus_rm_synthetic_lists"
RM_POLIS_TASK = "consensus_rm_polis"
RM_POLIS_VOTES_TASK = "consensus_rm_polis_votes"
POLIS_VOTES_SPLITS = ("train", "heldout_participants", "heldout_conversations")
RM_POINTWISE_MIXTURE = "consensus_rm_pointwise"
SYNTHETIC_SPLITS = question_bank.SPLITS
POLIS_SPLITS = ("train", "heldout_participants", "validation")

RoundsFn = Callable[[str], Iterable[records.Round]]
_TEXT = tf.TensorSpec([], tf.string)
_SCALAR = tf.TensorSpec([], tf.float32)


def jsonl_rounds(data_dir: str | os.PathLike) -> RoundsFn:
  """split -> the rounds in <data_dir>/<split>.jsonl, read lazily."""
  data_dir = pathlib.Path(data_dir)
  return lambda split: records.iter_jsonl(data_dir / f"{split}.jsonl")


def tokenize_text_features(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
  """Encodes the string output features; float features (labels, weights) pass through."""
  def encode(example):
    encoded = dict(example)
    for key, feature in output_features.items():
      if key in example and example[key].dtype == tf.string:
        encoded[key] = feature.vocabulary.encode_tf(example[key])
    return encoded
  return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_candidate_lists(dataset: tf.data.Dataset, output_features,
                             sequence_length=None) -> tf.data.Dataset:
  """inputs -> ids; candidates (a list of texts) -> `targets`, every candidate's ids + EOS one
  after another, with `candidate_lengths`. Only whole candidates are kept, as many as fit the
  targets length; their `labels` are kept with them."""
  vocabulary = output_features["targets"].vocabulary
  limit = (sequence_length or {}).get("targets")

  def encode(example):
    ragged = vocabulary.encode_tf(example["candidates"])
    eos = tf.fill([ragged.nrows(), 1], tf.cast(vocabulary.eos_id, ragged.dtype))
    ragged = tf.concat([ragged, eos], axis=1)
    lengths = tf.cast(ragged.row_lengths(), tf.int32)
    keep = tf.size(lengths)
    if limit is not None:
      keep = tf.reduce_sum(tf.cast(tf.cumsum(lengths) <= limit, tf.int32))
    return {"inputs": vocabulary.encode_tf(example["inputs"]),
            "targets": tf.cast(ragged[:keep].flat_values, tf.int32),
            "candidate_lengths": lengths[:keep], "labels": example["labels"][:keep]}

  return dataset.map(encode, num_parallel_calls=tf.data.AUTOTUNE)


def _source(make_examples: Callable[[str], Iterable[dict]], signature: dict[str, tf.TensorSpec],
            splits: Sequence[str]) -> seqio.FunctionDataSource:
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed  # one file per split; seqio shuffles examples downstream
    return tf.data.Dataset.from_generator(
        lambda: ({k: example[k] for k in signature} for example in make_examples(split)),
        output_signature=signature)
  return seqio.FunctionDataSource(dataset_fn, splits=tuple(splits))


def _output_features(vocabulary: seqio.Vocabulary, prompt: str, texts_with_eos: Sequence[str],
                     scalars: Sequence[str]) -> dict[str, seqio.Feature]:
  features = {prompt: seqio.Feature(vocabulary, add_eos=False)}
  features.update({k: seqio.Feature(vocabulary, add_eos=True) for k in texts_with_eos})
  features.update({k: seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False,
                                    dtype=tf.float32, rank=0) for k in scalars})
  return features


def _add_task(name: str, source: seqio.DataSource, output_features) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source, output_features=output_features,
      preprocessors=[tokenize_text_features, seqio.preprocessors.append_eos_after_trim])


def _polis_conversations(polis_dir: pathlib.Path, split: str) -> Iterable[polis.Conversation]:
  names = polis.VALIDATION_CONVERSATIONS if split == "validation" else polis.TRAIN_CONVERSATIONS
  for name in names:
    if (polis_dir / name).is_dir():
      yield polis.load_conversation(polis_dir / name)


def register_tasks(rounds: str | os.PathLike | RoundsFn, vocabulary: seqio.Vocabulary, *,
                   polis_dir: str | os.PathLike | None = None, polis_pass_weight: float = 0.0,
                   polis_heldout_fraction: float = 0.2, pairs_per_member: int = 8,
                   candidates_per_list: int = 8,
                   splits: Sequence[str] = SYNTHETIC_SPLITS, seed: int = 0) -> list[str]:
  """(Re-)registers every task and mixture; calling again replaces them. Returns the names.

  rounds: a directory of <split>.jsonl files, or a callable split -> rounds.
  polis_dir: the Polis conversations; None skips the Polis task and the pointwise mixture.
  """
  rounds_fn = rounds if callable(rounds) else jsonl_rounds(rounds)
  _add_task(SFT_TASK, _source(lambda split: examples_lib.sft_examples(rounds_fn(split)),
                              {"inputs": _TEXT, "targets": _TEXT}, splits),
            _output_features(vocabulary, "inputs", ["targets"], []))
  pointwise_signature = {"inputs": _TEXT, "targets": _TEXT, "label": _SCALAR, "weight": _SCALAR}
  pointwise_features = _output_features(vocabulary, "inputs", ["targets"], ["label", "weight"])
  _add_task(RM_RATINGS_TASK,
            _source(lambda split: examples_lib.rating_examples(rounds_fn(split)),
                    pointwise_signature, splits), pointwise_features)
  _add_task(RM_PAIRWISE_TASK,
            _source(lambda split: examples_lib.pairwise_examples(
                rounds_fn(split), pairs_per_member, seed),
                    {"inputs": _TEXT, "chosen": _TEXT, "rejected": _TEXT,
                     "chosen_label": _SCALAR, "rejected_label": _SCALAR}, splits),
            _output_features(vocabulary, "inputs", ["chosen", "rejected"],
                             ["chosen_label", "rejected_label"]))
  seqio.TaskRegistry.remove(RM_LISTS_TASK)
  seqio.TaskRegistry.add(
      RM_LISTS_TASK,
      source=_source(lambda split: examples_lib.list_examples(
          rounds_fn(split), candidates_per_list, seed),
                     {"inputs": _TEXT, "candidates": tf.TensorSpec([None], tf.string),
                      "labels": tf.TensorSpec([None], tf.float32)}, splits),
      output_features={
          "inputs": seqio.Feature(vocabulary, add_eos=False),
          "targets": seqio.Feature(vocabulary, add_eos=False),
          "candidate_lengths": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False),
          "labels": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False,
                                  dtype=tf.float32)},
      preprocessors=[tokenize_candidate_lists])
  names = [SFT_TASK, RM_RATINGS_TASK, RM_PAIRWISE_TASK, RM_LISTS_TASK]
  seqio.MixtureRegistry.remove(RM_POINTWISE_MIXTURE)
  if polis_dir is None:
    seqio.TaskRegistry.remove(RM_POLIS_TASK)
    return names

  polis_dir = pathlib.Path(polis_dir)
  participant_split = {"train": "train", "heldout_participants": "heldout", "validation": "all"}
  _add_task(RM_POLIS_TASK,
            _source(lambda split: examples_lib.polis_vote_text_examples(
                _polis_conversations(polis_dir, split), participant_split[split],
                polis_heldout_fraction, polis_pass_weight, seed),
                    pointwise_signature, POLIS_SPLITS), pointwise_features)
  seqio.MixtureRegistry.add(RM_POINTWISE_MIXTURE, [(RM_RATINGS_TASK, 1.0), (RM_POLIS_TASK, 1.0)])
  return names + [RM_POLIS_TASK, RM_POINTWISE_MIXTURE]


def register_polis_votes_task(conversations: Callable[[Sequence[str]], list[polis.Conversation]],
                              vocabulary: seqio.Vocabulary, *, train_conversations: Sequence[str],
                              heldout_conversations: Sequence[str] = (),
                              existing_share: float = 0.5, heldout_fraction: float = 0.2,
                              seed: int = 0) -> str:
  """The Polis reward model's own task: votes of the training participants of
  `train_conversations` (split train, members in one shuffled order), of their held-out
  participants (heldout_participants), and of the held-out participants of
  `heldout_conversations`, which training never sees (heldout_conversations; the rows
  studies/polis_peers scores its peers on). `existing_share` of every split's examples carry
  other participants' votes on the candidate (existing-statement mode), the rest do not.
  conversations: names -> loaded conversations."""
  pointwise_signature = {"inputs": _TEXT, "targets": _TEXT, "label": _SCALAR, "weight": _SCALAR}

  def make_examples(split: str):
    names = heldout_conversations if split == "heldout_conversations" else train_conversations
    participants = "train" if split == "train" else "heldout"
    return examples_lib.polis_vote_text_examples(
        conversations(names), participants, heldout_fraction, seed=seed,
        existing_share=existing_share, shuffle_members=split == "train")

  _add_task(RM_POLIS_VOTES_TASK, _source(make_examples, pointwise_signature, POLIS_VOTES_SPLITS),
            _output_features(vocabulary, "inputs", ["targets"], ["label", "weight"]))
  return RM_POLIS_VOTES_TASK
