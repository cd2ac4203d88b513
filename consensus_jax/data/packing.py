"""Packs (or pads) variable-length examples into fixed-length rows, for features of any dtype.

seqio's own packer finds an example's length by counting non-zero values, so it cannot carry
per-token weights that are zero inside an example (loss masks, score weights). This packer
takes lengths from the ragged structure instead and scatters every feature, int or float.

A stream is a group of features that share one length per example (e.g. tokens and their
loss weights). Several streams are packed jointly: an example goes into the current row only
if it fits in every stream, so segment k of one stream's row is the same example as segment k
of another's (used to keep chosen/rejected pairs aligned). Packing is greedy and in order,
within windows of `window` consecutive examples.
"""
import dataclasses
from collections.abc import Sequence

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Stream:
  length: int
  features: tuple[str, ...]  # all have the same length in any one example
  segment_ids_key: str  # 1, 2, ... per packed example, 0 on padding
  positions_key: str  # 0, 1, ... within each packed example, 0 on padding


def _assign_rows(lengths_BS: tf.Tensor, limits_S: tf.Tensor, pack: bool):
  """Row index and start offset (per stream) of each example in a window."""
  num_examples = tf.shape(lengths_BS)[0]
  if not pack:
    return tf.range(num_examples), tf.zeros_like(lengths_BS)

  def place(state, lengths_S):
    row, used_S = state
    fits = tf.reduce_all(used_S + lengths_S <= limits_S)
    return (tf.where(fits, row, row + 1), tf.where(fits, used_S + lengths_S, lengths_S))

  rows_B, ends_BS = tf.scan(
      place, lengths_BS, initializer=(tf.constant(0), tf.zeros_like(limits_S)))
  return rows_B, ends_BS - lengths_BS


def _pack_window(window, streams: Sequence[Stream], pack: bool):
  lengths_BS = tf.stack(
      [tf.cast(window[s.features[0]].row_lengths(), tf.int32) for s in streams], axis=1)
  limits_S = tf.constant([s.length for s in streams], tf.int32)
  rows_B, offsets_BS = _assign_rows(lengths_BS, limits_S, pack)
  num_rows = rows_B[-1] + 1
  example_index_B = tf.range(tf.shape(rows_B)[0])
  first_in_row_R = tf.math.unsorted_segment_min(example_index_B, rows_B, num_rows)
  segment_B = example_index_B - tf.gather(first_in_row_R, rows_B) + 1

  packed = {}
  for s, stream in enumerate(streams):
    reference = window[stream.features[0]]
    example_of_token = tf.cast(reference.value_rowids(), tf.int32)
    position = tf.range(tf.shape(example_of_token)[0]) - tf.gather(
        tf.cast(reference.row_starts(), tf.int32), example_of_token)
    column = tf.gather(offsets_BS[:, s], example_of_token) + position
    index = tf.stack([tf.gather(rows_B, example_of_token), column], axis=1)
    shape = tf.stack([num_rows, stream.length])
    for key in stream.features:
      packed[key] = tf.scatter_nd(index, window[key].flat_values, shape)
    packed[stream.segment_ids_key] = tf.scatter_nd(
        index, tf.gather(segment_B, example_of_token), shape)
    packed[stream.positions_key] = tf.scatter_nd(index, position, shape)
  return packed


def pack_or_pad(ds: tf.data.Dataset, streams: Sequence[Stream], *, pack: bool,
                window: int | None = None) -> tf.data.Dataset:
  """Rows of exactly `stream.length` per stream; examples longer than that are trimmed."""
  keys = {key: stream.length for stream in streams for key in stream.features}
  ds = ds.map(lambda ex: {k: ex[k][:length] for k, length in keys.items()},
              num_parallel_calls=tf.data.AUTOTUNE)
  window = window or max(stream.length for stream in streams)
  ds = ds.ragged_batch(window)
  ds = ds.map(lambda w: _pack_window(w, streams, pack), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.unbatch()

  def set_shapes(row):
    for stream in streams:
      for key in (*stream.features, stream.segment_ids_key, stream.positions_key):
        row[key] = tf.ensure_shape(row[key], [stream.length])
    return row

  return ds.map(set_shapes, num_parallel_calls=tf.data.AUTOTUNE)
