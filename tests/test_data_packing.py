"""packing.py: any-dtype features with zeros inside examples, and lockstep streams."""
import numpy as np
import tensorflow as tf

from consensus_jax.data import packing


def _dataset(examples):
  signature = {k: tf.TensorSpec([None], tf.as_dtype(np.asarray(v).dtype))
               for k, v in examples[0].items()}
  return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def test_packs_float_weights_with_interior_zeros():
  examples = [{"tokens": np.array([5, 6, 7], np.int32), "weights": np.array([0, 0, 1], np.float32)},
              {"tokens": np.array([8, 9], np.int32), "weights": np.array([0, 0.5], np.float32)},
              {"tokens": np.array([3, 4, 5, 6], np.int32),
               "weights": np.array([1, 0, 0, 1], np.float32)}]
  stream = packing.Stream(6, ("tokens", "weights"), "segment_ids", "positions")
  rows = list(packing.pack_or_pad(_dataset(examples), [stream], pack=True).as_numpy_iterator())
  assert [r["tokens"].tolist() for r in rows] == [[5, 6, 7, 8, 9, 0], [3, 4, 5, 6, 0, 0]]
  assert rows[0]["weights"].tolist() == [0, 0, 1, 0, 0.5, 0]
  assert rows[0]["segment_ids"].tolist() == [1, 1, 1, 2, 2, 0]
  assert rows[0]["positions"].tolist() == [0, 1, 2, 0, 1, 0]
  assert rows[1]["weights"].dtype == np.float32

  padded = list(packing.pack_or_pad(_dataset(examples), [stream], pack=False).as_numpy_iterator())
  assert len(padded) == 3
  assert padded[1]["segment_ids"].tolist() == [1, 1, 0, 0, 0, 0]


def test_streams_pack_in_lockstep():
  # The second example fits stream a's row but not stream b's: it must start new rows in both.
  examples = [{"a": np.array([1, 1], np.int32), "b": np.array([2, 2, 2], np.int32)},
              {"a": np.array([3], np.int32), "b": np.array([4, 4], np.int32)},
              {"a": np.array([5], np.int32), "b": np.array([6], np.int32)}]
  streams = [packing.Stream(4, ("a",), "a_segment_ids", "a_positions"),
             packing.Stream(4, ("b",), "b_segment_ids", "b_positions")]
  rows = list(packing.pack_or_pad(_dataset(examples), streams, pack=True).as_numpy_iterator())
  assert [r["a"].tolist() for r in rows] == [[1, 1, 0, 0], [3, 5, 0, 0]]
  assert [r["b"].tolist() for r in rows] == [[2, 2, 2, 0], [4, 4, 6, 0]]
  for row in rows:
    assert row["a_segment_ids"].max() == row["b_segment_ids"].max()


def test_long_examples_are_trimmed_to_the_row():
  examples = [{"t": np.arange(1, 10, dtype=np.int32)}]
  stream = packing.Stream(4, ("t",), "seg", "pos")
  (row,) = packing.pack_or_pad(_dataset(examples), [stream], pack=True).as_numpy_iterator()
  assert row["t"].tolist() == [1, 2, 3, 4] and row["seg"].tolist() == [1, 1, 1, 1]
