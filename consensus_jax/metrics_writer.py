"""Training metrics as TensorBoard event files and as a console progress line.

Event files are written with TensorFlow's summary writer and the "scalars" plugin metadata
that TensorBoard expects (`tf.summary.scalar` itself needs the tensorboard package, which is
not installed here). Only process 0 writes; the others get a writer that does nothing.
"""
import collections
import math
import pathlib
from typing import Mapping

import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


class MetricsWriter:
  """Scalars under <log_dir>/<name> (e.g. train/, eval/), one TensorBoard run per name."""

  def __init__(self, log_dir: str | pathlib.Path, enabled: bool = True):
    self.log_dir = pathlib.Path(log_dir)
    self.enabled = enabled
    self._writers: dict[str, tf.summary.SummaryWriter] = {}

  def _writer(self, name: str) -> tf.summary.SummaryWriter:
    if name not in self._writers:
      self._writers[name] = tf.summary.create_file_writer(str(self.log_dir / name))
    return self._writers[name]

  def write_scalars(self, name: str, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    with self._writer(name).as_default():
      for tag, value in scalars.items():
        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                         metadata=_SCALAR_METADATA)

  def flush(self) -> None:
    for writer in self._writers.values():
      writer.flush()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers.clear()


def read_scalars(run_dir: str | pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] from every event file under run_dir (tests and quick looks)."""
  found = collections.defaultdict(list)
  for path in sorted(pathlib.Path(run_dir).glob("events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
      event = tf.compat.v1.Event.FromString(record)
      for value in event.summary.value:
        found[value.tag].append((event.step, float(tf.make_ndarray(value.tensor))))
  return dict(found)


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def progress_line(step: int, total_steps: int, scalars: Mapping[str, float],
                  eta_seconds: float) -> str:
  """`step 120/1000 | loss 2.314 | lr 3.00e-04 | grad_norm 0.920 | 1.90 steps/s | ...`.

  Throughput, MFU and ETA read "n/a" until a step after the first (compiling) one is timed.
  """
  parts = [f"step {step}/{total_steps}", f"loss {scalars['loss']:.4f}",
           f"lr {scalars['learning_rate']:.2e}", f"grad_norm {scalars['grad_norm']:.3f}"]
  if "steps_per_second" in scalars:
    parts += [f"{scalars['steps_per_second']:.2f} steps/s",
              f"{scalars['tokens_per_second']:,.0f} tokens/s"]
  else:
    parts += ["steps/s n/a", "tokens/s n/a"]
  parts.append(f"MFU {scalars['mfu']:.1%}" if "mfu" in scalars else "MFU n/a")
  parts.append(f"ETA {_duration(eta_seconds)}")
  return " | ".join(parts)


class ConsoleLogger:
  """Progress lines and notices through absl logging, from process 0 only."""

  def __init__(self, enabled: bool = True):
    self.enabled = enabled

  def info(self, message: str, *args) -> None:
    if self.enabled:
      logging.info(message, *args)
