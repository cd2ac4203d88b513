r"""Training binary (SFT and the reward model), T5X style.

    python -m consensus_jax.train \
      --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/tiny.gin \
      --gin.MODEL_DIR="'/tmp/sft'" --gin.TRAIN_STEPS=200

Gin files are found relative to --gin_search_paths, then the repository and its gin_configs/.
Multi-process (one process per host, or several on one machine): pass --coordinator_address,
--num_processes and --process_id, or --multiprocess to let JAX detect a TPU pod / SLURM / k8s
cluster, or set JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID) in the
environment. Each process feeds its own rows of the global batch; only process 0 writes logs,
summaries and gin configs. Setting JAX_COMPILATION_CACHE_DIR lets a restarted (preempted) run
reuse the compiled train step instead of compiling it again.
"""
import logging as python_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_multi_string("gin_file", [], "Gin files, parsed in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings (also --gin.NAME=VALUE).")
flags.DEFINE_list("gin_search_paths", ["."], "Directories gin files are looked up in.")
flags.DEFINE_bool("multiprocess", False,
                  "jax.distributed.initialize() with cluster auto-detection.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
FLAGS = flags.FLAGS


def _env_int(name: str):
  value = os.environ.get(name)
  return None if value is None else int(value)


def maybe_initialize_distributed() -> None:
  """jax.distributed.initialize when the flags or the environment ask for a multi-process run."""
  import jax

  coordinator = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not (FLAGS.multiprocess or coordinator):
    return
  num_processes = FLAGS.num_processes if FLAGS.num_processes is not None else _env_int(
      "JAX_NUM_PROCESSES")
  process_id = FLAGS.process_id if FLAGS.process_id is not None else _env_int("JAX_PROCESS_ID")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


class _HideOrbaxInfo(python_logging.Filter):
  """Orbax logs dozens of INFO lines per save; its warnings and errors still show."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "orbax" not in record.pathname


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_HideOrbaxInfo())
  maybe_initialize_distributed()

  from consensus_jax import gin_utils
  from consensus_jax import trainer

  gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
  trainer.train()


def run() -> None:
  sys.argv = _rewritten_argv()
  app.run(main)


def _rewritten_argv() -> list[str]:
  from consensus_jax import gin_utils

  return gin_utils.rewrite_gin_args(sys.argv)


if __name__ == "__main__":
  run()
