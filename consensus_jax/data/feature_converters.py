"""seqio feature converters for the decoder-only SFT policy and the reward model.

All converters emit segment ids and positions whether or not they pack, so the model code has
one input signature. L below is the model length, task "inputs" length + "targets" length.

SFTFeatureConverter (task features inputs = prompt ids, targets = statement ids + EOS):
  decoder_input_tokens   int32 [L]  targets shifted right, 0 at each example's start
  decoder_target_tokens  int32 [L]  prompt ids then target ids
  decoder_loss_weights   int32 [L]  1 on target tokens only (never the prompt), 0 on padding
  decoder_segment_ids    int32 [L]  1, 2, ... per packed example, 0 on padding
  decoder_positions      int32 [L]  0, 1, ... restarting at each packed example

RMFeatureConverter (task features inputs = member prefix ids, targets = candidate ids + EOS,
plus float scalars label and weight):
  decoder_input_tokens   int32 [L]    prefix ids then candidate ids (not shifted)
  decoder_segment_ids, decoder_positions as above
  score_weights          float32 [L]  the example's weight at its last real token, else 0
  score_targets          float32 [L]  the example's label at that same position, else 0

PairwiseRMFeatureConverter (task features inputs, chosen, rejected; float scalars chosen_label
and rejected_label, -1 where the candidate was not rated): two RM feature sets,
  chosen_decoder_input_tokens, chosen_decoder_segment_ids, chosen_decoder_positions,
  chosen_score_weights, chosen_score_targets                    [inputs + chosen lengths]
  rejected_... the same for the rejected candidate              [inputs + rejected lengths]
Pairs are packed jointly: segment k of a chosen row and segment k of the rejected row at the
same batch index are one pair, so a Bradley-Terry loss compares per-segment scores.
"""
from collections.abc import Mapping

import seqio
import tensorflow as tf

from consensus_jax.data import packing
from consensus_jax.data import prompts

Spec = seqio.FeatureConverter.FeatureSpec


def _require_scalars(ds: tf.data.Dataset, keys, converter: str) -> None:
  missing = [k for k in keys if k not in ds.element_spec]
  if missing:
    raise ValueError(f"{converter} needs feature(s) {missing} besides its token features; got "
                     f"{sorted(ds.element_spec)}")


def _last_token_value(length: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
  """[length] float32: `value` at the last position, 0 elsewhere."""
  return tf.one_hot(length - 1, length, on_value=tf.cast(value, tf.float32), off_value=0.0)


class SFTFeatureConverter(seqio.FeatureConverter):
  """Prompt + target as one decoder sequence, with the loss on the target only.

  The start token is prompts.POLICY_START_ID, the one the serving path puts before a prompt.
  """

  TASK_FEATURES = {"inputs": Spec(dtype=tf.int32), "targets": Spec(dtype=tf.int32)}
  MODEL_FEATURES = {
      "decoder_input_tokens": Spec(dtype=tf.int32),
      "decoder_target_tokens": Spec(dtype=tf.int32),
      "decoder_loss_weights": Spec(dtype=tf.int32),
      "decoder_segment_ids": Spec(dtype=tf.int32),
      "decoder_positions": Spec(dtype=tf.int32),
  }
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, pack: bool = True, **kwargs):
    if kwargs.setdefault("bos_id", prompts.POLICY_START_ID) != prompts.POLICY_START_ID:
      raise ValueError(f"SFTFeatureConverter: bos_id={kwargs['bos_id']} differs from "
                       f"prompts.POLICY_START_ID={prompts.POLICY_START_ID}, which serving uses")
    super().__init__(pack=pack, **kwargs)

  def _convert_features(self, ds, task_feature_lengths: Mapping[str, int]):
    inputs_length = task_feature_lengths["inputs"]
    targets_length = task_feature_lengths["targets"]

    def concatenate(ex):
      inputs = ex["inputs"][:inputs_length]
      targets = ex["targets"][:targets_length]
      return {"decoder_target_tokens": tf.concat([inputs, targets], 0),
              "decoder_loss_weights": tf.concat(
                  [tf.zeros_like(inputs), tf.ones_like(targets)], 0)}

    ds = ds.map(concatenate, num_parallel_calls=tf.data.AUTOTUNE)
    stream = packing.Stream(inputs_length + targets_length,
                            ("decoder_target_tokens", "decoder_loss_weights"),
                            "decoder_segment_ids", "decoder_positions")
    ds = packing.pack_or_pad(ds, [stream], pack=self.pack)

    def shift(row):
      row["decoder_input_tokens"] = seqio.utils.make_autoregressive_inputs(
          row["decoder_target_tokens"], sequence_id=row["decoder_segment_ids"],
          bos_id=self.bos_id)
      return row

    return ds.map(shift, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]):
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    return {k: length for k in self.MODEL_FEATURES}


def _rm_example(prefix, suffix, label, weight, prefix_length, suffix_length, name=""):
  tokens = tf.concat([prefix[:prefix_length], suffix[:suffix_length]], 0)
  length = tf.shape(tokens)[0]
  return {f"{name}decoder_input_tokens": tokens,
          f"{name}score_weights": _last_token_value(length, weight),
          f"{name}score_targets": _last_token_value(length, label)}


def _rm_stream(length: int, name: str = "") -> packing.Stream:
  return packing.Stream(
      length, (f"{name}decoder_input_tokens", f"{name}score_weights", f"{name}score_targets"),
      f"{name}decoder_segment_ids", f"{name}decoder_positions")


def _rm_model_features(name: str = "") -> dict[str, Spec]:
  return {f"{name}decoder_input_tokens": Spec(dtype=tf.int32),
          f"{name}decoder_segment_ids": Spec(dtype=tf.int32),
          f"{name}decoder_positions": Spec(dtype=tf.int32),
          f"{name}score_weights": Spec(dtype=tf.float32),
          f"{name}score_targets": Spec(dtype=tf.float32)}


class RMFeatureConverter(seqio.FeatureConverter):
  """Member prefix + candidate as one sequence, scored at its last token."""

  TASK_FEATURES = {"inputs": Spec(dtype=tf.int32), "targets": Spec(dtype=tf.int32)}
  MODEL_FEATURES = _rm_model_features()
  PACKING_FEATURE_DTYPES = {}

  def _convert_features(self, ds, task_feature_lengths: Mapping[str, int]):
    _require_scalars(ds, ("label", "weight"), type(self).__name__)
    inputs_length = task_feature_lengths["inputs"]
    targets_length = task_feature_lengths["targets"]
    ds = ds.map(lambda ex: _rm_example(ex["inputs"], ex["targets"], ex["label"], ex["weight"],
                                       inputs_length, targets_length),
                num_parallel_calls=tf.data.AUTOTUNE)
    return packing.pack_or_pad(ds, [_rm_stream(inputs_length + targets_length)],
                               pack=self.pack)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]):
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    return {k: length for k in self.MODEL_FEATURES}


class PairwiseRMFeatureConverter(seqio.FeatureConverter):
  """A chosen and a rejected candidate after the same member prefix, packed in lockstep."""

  TASK_FEATURES = {"inputs": Spec(dtype=tf.int32), "chosen": Spec(dtype=tf.int32),
                   "rejected": Spec(dtype=tf.int32)}
  MODEL_FEATURES = {**_rm_model_features("chosen_"), **_rm_model_features("rejected_")}
  PACKING_FEATURE_DTYPES = {}

  def _convert_features(self, ds, task_feature_lengths: Mapping[str, int]):
    _require_scalars(ds, ("chosen_label", "rejected_label"), type(self).__name__)
    lengths = task_feature_lengths

    def convert(ex):
      return {
          **_rm_example(ex["inputs"], ex["chosen"], ex["chosen_label"], 1.0,
                        lengths["inputs"], lengths["chosen"], "chosen_"),
          **_rm_example(ex["inputs"], ex["rejected"], ex["rejected_label"], 1.0,
                        lengths["inputs"], lengths["rejected"], "rejected_")}

    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    streams = [_rm_stream(lengths["inputs"] + lengths["chosen"], "chosen_"),
               _rm_stream(lengths["inputs"] + lengths["rejected"], "rejected_")]
    return packing.pack_or_pad(ds, streams, pack=self.pack)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]):
    lengths = {}
    for name in ("chosen", "rejected"):
      length = task_feature_lengths["inputs"] + task_feature_lengths[name]
      lengths.update({k: length for k in _rm_model_features(f"{name}_")})
    return lengths


class RMListFeatureConverter(seqio.FeatureConverter):
  """One member prefix, then each of several candidates on its own branch, in one segment.

  Task features: inputs (prefix ids), targets (every candidate's ids + EOS, one after another),
  candidate_lengths, labels. Model features (L = inputs + targets lengths):
    decoder_input_tokens, decoder_segment_ids   as RMFeatureConverter
    decoder_branch_ids     int32 [L]    0 on the prefix, k on the k-th candidate's tokens
    decoder_positions      int32 [L]    0.. on the prefix; each candidate restarts right after
                                        the prefix, as if it alone followed it
    score_weights, score_targets        1 and the candidate's label at each candidate's EOS
  With branch ids the decoder's mask lets a candidate see the prefix and itself only
  (layers.attention_mask), so every candidate scores as it does alone after a cached prefix.
  """

  TASK_FEATURES = {"inputs": Spec(dtype=tf.int32), "targets": Spec(dtype=tf.int32)}
  MODEL_FEATURES = {**_rm_model_features(), "decoder_branch_ids": Spec(dtype=tf.int32)}
  PACKING_FEATURE_DTYPES = {}

  def _convert_features(self, ds, task_feature_lengths: Mapping[str, int]):
    _require_scalars(ds, ("candidate_lengths", "labels"), type(self).__name__)
    inputs_length = task_feature_lengths["inputs"]
    length = inputs_length + task_feature_lengths["targets"]

    def convert(ex):
      prefix = ex["inputs"][:inputs_length]
      prefix_length = tf.shape(prefix)[0]
      lengths = ex["candidate_lengths"]
      # Candidate k of each token, and the token's offset within its candidate.
      branch = tf.repeat(tf.range(1, tf.size(lengths) + 1), lengths)
      starts = tf.cumsum(lengths, exclusive=True)
      offset = tf.range(tf.reduce_sum(lengths)) - tf.gather(starts, branch - 1)
      is_last = tf.equal(offset, tf.gather(lengths, branch - 1) - 1)
      label = tf.gather(ex["labels"], branch - 1)
      zeros = tf.zeros([prefix_length], tf.float32)
      return {
          "decoder_input_tokens": tf.concat([prefix, ex["targets"]], 0),
          "decoder_branch_ids": tf.concat([tf.zeros([prefix_length], tf.int32), branch], 0),
          "branch_positions": tf.concat([tf.range(prefix_length), prefix_length + offset], 0),
          "score_weights": tf.concat([zeros, tf.cast(is_last, tf.float32)], 0),
          "score_targets": tf.concat([zeros, tf.where(is_last, label, 0.0)], 0)}

    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    stream = packing.Stream(length, ("decoder_input_tokens", "decoder_branch_ids",
                                     "branch_positions", "score_weights", "score_targets"),
                            "decoder_segment_ids", "packed_positions")

    def use_branch_positions(row):
      row = dict(row)
      row["decoder_positions"] = row.pop("branch_positions")
      del row["packed_positions"]
      return row

    return packing.pack_or_pad(ds, [stream], pack=self.pack).map(
        use_branch_positions, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]):
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    return {k: length for k in self.MODEL_FEATURES}
