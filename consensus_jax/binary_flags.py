"""The flags every binary shares (gin files, overrides, search paths, multi-process), and the
start-up they imply. Binaries: train, eval, infer, collect."""
import logging as python_logging
import os
import sys
import traceback
from typing import Callable

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


def parse_gin_flags(finalize: bool = True) -> None:
  from consensus_jax import gin_utils

  gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths,
                      finalize=finalize)


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run, after rewriting --gin.NAME=VALUE into --gin_bindings (on a CPU host: with
  JAX pinned to the CPU and once restarting with cpu_runtime's malloc settings)."""
  from consensus_jax import cpu_runtime, gin_utils

  cpu_runtime.pin_cpu_where_no_accelerator()
  cpu_runtime.reexec_with_tuned_malloc()
  sys.argv = gin_utils.rewrite_gin_args(sys.argv)
  app.run(main)


class _HideOrbaxInfo(python_logging.Filter):
  """Orbax logs dozens of INFO lines per save or restore; its warnings and errors still show."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or "orbax" not in record.pathname


def run_gin_binary(configured_fn: Callable[[], object], finalize_gin: bool = True) -> None:
  """The whole life of a gin-configured binary: flags, distributed start-up, gin, then fn().

  finalize_gin=False leaves required bindings unchecked (precompile reads a run gin's shapes,
  not its directories, so MODEL_DIR and the like need not be given)."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_HideOrbaxInfo())
    try:
      maybe_initialize_distributed()
      parse_gin_flags(finalize_gin)
      configured_fn()
    except BaseException as error:  # pylint: disable=broad-except
      exit_after_error(error)

  run(main)


def exit_after_error(error: BaseException) -> None:
  """Reports `error` and ends the process at once with a non-zero status.

  A normal exit after an error can hang for ever: interpreter shutdown then finalises tf.data's
  Python generators and orbax's and JAX's background threads in an order that deadlocks (seen
  after a bad record met mid-stream once a checkpoint was saved). The binaries' own `finally`
  blocks have already run when this is called (checkpoints waited for and closed, summaries
  flushed), so nothing is lost by skipping the rest.
  """
  code = 130 if isinstance(error, KeyboardInterrupt) else (
      error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 1)
  if not isinstance(error, SystemExit):
    traceback.print_exception(error)
    print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access
