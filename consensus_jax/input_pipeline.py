"""seqio task -> this process's rows of each global batch, at a resumable position.

The training stream is deterministic: seqio shuffles with a fixed seed and repeats, so batch n
is the same in every run. The position saved with a checkpoint is the number of global batches
consumed; a resumed run rebuilds the stream and skips that many batches, and so sees exactly the
batches an uninterrupted run would. (Skipping re-tokenizes the skipped examples: the pipeline
runs at more than 10x the step's token rate, so this costs at most about a tenth of the time
already trained. tf.data iterator checkpoints cannot replace it: the sources are Python
generators.)

Multi-process: by default every process builds the same global batch and keeps only the rows
that its devices hold (`process_rows`), so the global batch does not depend on the process
count; `InputConfig.shard_source_per_process=True` instead gives each process its own shard of
the examples (seqio ShardInfo), for data too large to read on every host.
"""
import dataclasses
import pathlib
import re
from typing import Iterator, Mapping, Optional, Sequence

import gin
import jax
from absl import logging
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import Mesh

from consensus_jax import gin_utils, partitioning
from consensus_jax.data.errors import DataError

# tf.data runs the sources' Python generators inside an op, so a DataError raised there (a bad
# record met mid-stream) reaches us as an OpError whose message holds the Python traceback.
_WRAPPED_DATA_ERROR = re.compile(r"DataError: ([^\n]+)")


def _next_batch(iterator):
  """next(iterator), with a bad record's DataError raised as itself (file:line and all)."""
  try:
    return next(iterator)
  except tf.errors.OpError as error:
    match = _WRAPPED_DATA_ERROR.search(error.message or "")
    if match is None:
      raise
    raise DataError(match.group(1)) from None


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InputConfig:
  """One seqio task/mixture split at fixed feature lengths; batch_size is the global batch."""
  task: str
  task_feature_lengths: Mapping[str, int]
  batch_size: int
  split: str = "train"
  shuffle: bool = True
  seed: int = 0
  pack: bool = True
  shard_source_per_process: bool = False

  def __post_init__(self):
    gin_utils.positive_int(self.batch_size, "BATCH_SIZE (InputConfig.batch_size)")
    if not isinstance(self.task_feature_lengths, Mapping) or not self.task_feature_lengths:
      raise gin_utils.BindingError(
          "TASK_FEATURE_LENGTHS (InputConfig.task_feature_lengths) must be a dict such as "
          f"{{'inputs': 256, 'targets': 64}}, got {self.task_feature_lengths!r}")
    for name, length in self.task_feature_lengths.items():
      gin_utils.positive_int(length, f"TASK_FEATURE_LENGTHS[{name!r}]")


def process_rows(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
  """[start, stop) of the global batch rows held by this process's devices."""
  sharding = partitioning.batch_sharding(mesh, 2)
  row_slices = [index[0] for index in
                sharding.addressable_devices_indices_map((global_batch_size, 1)).values()]
  start = min(s.start or 0 for s in row_slices)
  stop = max(global_batch_size if s.stop is None else s.stop for s in row_slices)
  covered = set()
  for s in row_slices:
    covered.update(range(s.start or 0, global_batch_size if s.stop is None else s.stop))
  if covered != set(range(start, stop)):
    raise ValueError(f"process {jax.process_index()} holds non-contiguous batch rows "
                     f"{sorted(covered)}; the mesh's batch axes must give each process a block")
  return start, stop


def _dataset(config: InputConfig, converter: seqio.FeatureConverter, *, num_epochs,
             shuffle: bool, shard_info: Optional[seqio.ShardInfo]):
  return seqio.get_dataset(
      config.task, dict(config.task_feature_lengths), converter, dataset_split=config.split,
      shuffle=shuffle, seed=config.seed, num_epochs=num_epochs, shard_info=shard_info,
      verbose=False)


def feature_length_stats(config: InputConfig, num_examples: int = 64) -> dict[str, dict]:
  """For each feature, over the split's first `num_examples` examples: the share longer than its
  task feature length (the converter cuts them) and the median length in tokens."""
  task = seqio.get_mixture_or_task(config.task)
  ds = task.get_dataset(None, split=config.split, shuffle=False, num_epochs=1)
  lengths = {name: [] for name in config.task_feature_lengths}
  for example in ds.take(num_examples).as_numpy_iterator():
    for name in config.task_feature_lengths:
      value = example.get(name)
      if value is not None and np.ndim(value) == 1:
        lengths[name].append(len(value))
  return {name: {"cut_share": float(np.mean(np.array(found) > config.task_feature_lengths[name])),
                 "median_length": float(np.median(found))}
          for name, found in lengths.items() if found}


def check_feature_lengths(config: InputConfig, refuse_ratio: float = 8.0,
                          warn_share: float = 0.25) -> dict[str, dict]:
  """Refuses a feature length that keeps less than 1/refuse_ratio of a typical example (a run
  that would train on fragments); warns when `warn_share` or more of the examples are cut."""
  stats = feature_length_stats(config)
  for name, found in stats.items():
    length = config.task_feature_lengths[name]
    binding = f"TASK_FEATURE_LENGTHS[{name!r}]={length} (task {config.task}, split {config.split})"
    if found["median_length"] > refuse_ratio * length:
      raise gin_utils.BindingError(
          f"{binding} keeps less than 1/{refuse_ratio:g} of a typical example (median "
          f"{found['median_length']:.0f} tokens; {found['cut_share']:.0%} would be cut). "
          "Make it longer.")
    if found["cut_share"] >= warn_share:
      logging.warning("%s cuts %.0f%% of the first examples (median %d tokens)", binding,
                      100 * found["cut_share"], found["median_length"])
  return stats


class TrainBatches:
  """Endless iterator: this process's rows (numpy) of global batches position, position + 1, ..."""

  def __init__(self, config: InputConfig, converter: seqio.FeatureConverter, mesh: Mesh,
               start_position: int = 0):
    self.config = config
    self.position = start_position
    start, stop = process_rows(mesh, config.batch_size)
    if config.shard_source_per_process:
      shard = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
      logging.info("process %d reads shard %d of %d of %s/%s (rows %d-%d of each global batch)",
                   jax.process_index(), shard.index, shard.num_shards, config.task, config.split,
                   start, stop - 1)
      ds = _dataset(config, converter, num_epochs=None, shuffle=config.shuffle, shard_info=shard)
      ds = ds.batch(stop - start, drop_remainder=True)
      self._rows = slice(None)
    else:
      ds = _dataset(config, converter, num_epochs=None, shuffle=config.shuffle, shard_info=None)
      ds = ds.batch(config.batch_size, drop_remainder=True)
      self._rows = slice(start, stop)
    self._iterator = ds.skip(start_position).prefetch(2).as_numpy_iterator()

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = _next_batch(self._iterator)
    self.position += 1
    return {name: value[self._rows] for name, value in batch.items()}


def eval_batches(config: InputConfig, converter: seqio.FeatureConverter, mesh: Mesh,
                 num_batches: Optional[int] = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the split in order (no shuffle), this process's rows of each global batch.

  The last partial batch is padded with all-zero rows, which carry zero loss weight, so every
  example counts once and every process runs the same number of steps.
  """
  start, stop = process_rows(mesh, config.batch_size)
  ds = _dataset(config, converter, num_epochs=1, shuffle=False, shard_info=None)
  ds = ds.batch(config.batch_size)
  if num_batches is not None:
    ds = ds.take(num_batches)
  iterator = ds.prefetch(2).as_numpy_iterator()
  while True:
    try:
      batch = _next_batch(iterator)
    except StopIteration:
      return
    rows = next(iter(batch.values())).shape[0]
    if rows < config.batch_size:
      batch = {name: np.concatenate(
          [value, np.zeros((config.batch_size - rows, *value.shape[1:]), value.dtype)])
               for name, value in batch.items()}
    yield {name: value[start:stop] for name, value in batch.items()}


@gin.configurable
def register_synthetic_tasks(data_dir: str, vocab_dir: str, vocab_size: int = 8000,
                             polis_dir: Optional[str] = None) -> seqio.Vocabulary:
  """Registers the project's seqio tasks over <data_dir>/<split>.jsonl; returns the vocabulary.

  The vocabulary is trained into vocab_dir on first use (seconds) and loaded after that.
  """

  from consensus_jax.data import records, tasks
  from consensus_jax.data import vocab

  if not (pathlib.Path(data_dir) / "train.jsonl").is_file():
    raise DataError(
        f"register_synthetic_tasks: no {data_dir}/train.jsonl; generate the data first with "
        f"python -m consensus_jax.data.synthetic --out_dir={data_dir}")
  # Every split is read once before anything compiles: a bad record fails now, naming its
  # line, not mid-run (and DataError keeps its message, not a tf.data op error around it).
  for split in records.QUESTION_SPLITS:
    if (pathlib.Path(data_dir) / f"{split}.jsonl").is_file():
      records.check_split_file(pathlib.Path(data_dir) / f"{split}.jsonl", split)
  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size=vocab_size)
  tasks.register_tasks(data_dir, vocabulary, polis_dir=polis_dir)
  return vocabulary


@gin.configurable
def register_polis_tasks(polis_dir: str, vocab_dir: str, vocab_size: int = 8000,
                         train_conversations: Optional[Sequence[str]] = None,
                         heldout_conversations: Sequence[str] = (),
                         heldout_fold: Optional[int] = None, num_folds: int = 3,
                         existing_share: float = 0.5, heldout_fraction: float = 0.2,
                         seed: int = 0) -> seqio.Vocabulary:
  """Registers the Polis reward model's task (tasks.register_polis_votes_task) over the
  conversation folders in polis_dir; returns the vocabulary (trained into vocab_dir on first use).

  Conversations held out from training: `heldout_conversations`, or with `heldout_fold` = f the
  f-th of `num_folds` folds (polis.folds); training uses `train_conversations`, by default
  every other folder.
  """
  from consensus_jax.data import polis, tasks, vocab

  names = polis.existing_conversation_names(polis_dir,
                                            "register_polis_tasks.polis_dir (POLIS_DIR)")
  if heldout_fold is not None:
    folds = polis.folds(names, num_folds)
    if not 0 <= heldout_fold < len(folds):
      raise gin_utils.BindingError(
          f"register_polis_tasks.heldout_fold={heldout_fold}: there are {len(folds)} folds "
          f"(num_folds={num_folds} over {len(names)} conversations)")
    heldout_conversations = folds[heldout_fold]
  for binding, chosen in (("heldout_conversations", heldout_conversations),
                          ("train_conversations", train_conversations or ())):
    unknown = sorted(set(chosen) - set(names))
    if unknown:
      raise gin_utils.BindingError(
          f"register_polis_tasks.{binding}: {unknown} not among the conversations in "
          f"{polis_dir} ({', '.join(names)})")
  if train_conversations is None:
    train_conversations = [n for n in names if n not in set(heldout_conversations)]
  if not train_conversations:
    raise gin_utils.BindingError("register_polis_tasks: no conversation left to train on")
  if not 0.0 <= existing_share <= 1.0:
    raise gin_utils.BindingError(
        f"register_polis_tasks.existing_share={existing_share} is not a share in [0, 1]")
  cache: dict[str, polis.Conversation] = {}

  def load(chosen):
    for name in chosen:
      if name not in cache:
        cache[name] = polis.load_conversation(pathlib.Path(polis_dir) / name)
    return [cache[name] for name in chosen]

  load(list(train_conversations) + list(heldout_conversations))  # bad folders fail here
  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size=vocab_size)
  tasks.register_polis_votes_task(
      load, vocabulary, train_conversations=list(train_conversations),
      heldout_conversations=list(heldout_conversations), existing_share=existing_share,
      heldout_fraction=heldout_fraction, seed=seed)
  return vocabulary

