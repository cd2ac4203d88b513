"""Orbax checkpoints of the train state, with the input position that goes with it.

Layout under a run's model_dir:
  checkpoints/<step>/state/   params, opt_state, step (orbax StandardSave; sharded arrays)
  checkpoints/<step>/input/   {"position": batches consumed, "step": step} (JSON)

Saves are asynchronous (orbax copies the arrays to host memory before `save` returns, so the
trainer may donate the state to the next step at once) and the last `keep` are kept. Restoring
takes an abstract target whose leaves carry the *current* run's shardings, so a checkpoint
written on one mesh shape restores onto another (orbax reshards while reading).

A params-only checkpoint (`save_params`: a converted or imported model, e.g. from
models.hf_import) starts a fine-tuning run; `load_params` also reads the params out of a full
train checkpoint step directory.
"""
import pathlib
import shutil
import time
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

STATE_ITEM = "state"
INPUT_ITEM = "input"
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was expected; the message names the directory and step."""


def _describe(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


class Checkpointer:
  """CheckpointManager for one run: save every N steps (plus forced saves), restore latest."""

  def __init__(self, model_dir: str | pathlib.Path, save_every_steps: int, keep: Optional[int],
               async_save: bool = True):
    self.directory = pathlib.Path(model_dir).absolute() / "checkpoints"
    self._options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every_steps, max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save)
    self._open()

  def _open(self) -> None:
    self._manager = ocp.CheckpointManager(self.directory, options=self._options,
                                          item_names=(STATE_ITEM, INPUT_ITEM))

  def restore_latest_intact(self, abstract_state: Any) -> Optional[tuple[Any, int, int]]:
    """(state, input position, step) of the newest checkpoint that restores, or None if there
    is none at all.

    A damaged newer step (truncated arrays, a missing manifest, garbled input JSON: a crash
    or a full disk mid-save) is skipped with a warning and moved to model_dir/DAMAGED_DIR, so
    the run goes on from the step before it and later saves of that step are not blocked.
    If every step is damaged, CheckpointError lists what each one failed with.
    """
    failures = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, position = self.restore(step, abstract_state)
      except Exception as error:  # pylint: disable=broad-except
        failures.append((step, error))
        logging.warning("checkpoint step %d under %s is damaged and is skipped: %s", step,
                        self.directory, _describe(error))
        self._manager.close()
        self._open()  # a failed restore can leave the manager unusable (a closed event loop)
        continue
      if failures:
        self._set_aside([failed for failed, _ in failures])
      return state, position, step
    if failures:
      raise CheckpointError(
          f"no intact checkpoint under {self.directory}: " + "; ".join(
              f"step {step}: {_describe(error)}" for step, error in failures))
    return None

  def _set_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      aside = self.directory.parent / DAMAGED_DIR
      aside.mkdir(exist_ok=True)
      for step in steps:
        target = aside / f"{step}-{int(time.time())}"
        shutil.move(str(self.directory / str(step)), str(target))
        logging.warning("moved damaged checkpoint step %d to %s", step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("checkpointing: damaged steps set aside")
    self._manager.close()
    self._open()

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    return self._manager.should_save(step)

  def reached_preemption(self, step: int) -> bool:
    """True at the step all processes agreed to stop at after a preemption notice (SIGTERM)."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: Any, input_position: int, force: bool = False) -> bool:
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardSave(state),
        INPUT_ITEM: ocp.args.JsonSave({"position": int(input_position), "step": int(step)})}),
                              force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, int]:
    """(state, input position) of `step`; abstract_state's shardings decide the layout."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(abstract_state),
        INPUT_ITEM: ocp.args.JsonRestore()}))
    return restored[STATE_ITEM], int(restored[INPUT_ITEM]["position"])

  def input_position(self, step: int) -> int:
    """The number of global batches consumed when `step` was saved."""
    restored = self._manager.restore(step, args=ocp.args.Composite(**{
        INPUT_ITEM: ocp.args.JsonRestore()}))
    return int(restored[INPUT_ITEM]["position"])

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_with_shardings(shapes: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (the restore target)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def save_params(directory: str | pathlib.Path, params: Any) -> pathlib.Path:
  """Writes a params-only checkpoint (the starting point of a fine-tuning run)."""
  directory = pathlib.Path(directory).absolute()
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, params)
    checkpointer.wait_until_finished()
  return directory


def load_params(directory: str | pathlib.Path, abstract_params: Any) -> Any:
  """Params from a params-only checkpoint, or from the state of a train checkpoint step.

  abstract_params: ShapeDtypeStructs with the shardings to restore onto; a shape that does not
  match the checkpoint is an error.
  """
  directory = pathlib.Path(directory).absolute()
  if not directory.exists():
    raise FileNotFoundError(f"load_params: no checkpoint at {directory}")
  if (directory / STATE_ITEM).is_dir():
    # A train checkpoint step: read only the params subtree of its state.
    target = {"params": abstract_params}
    with ocp.PyTreeCheckpointer() as checkpointer:
      restored = checkpointer.restore(
          directory / STATE_ITEM, args=ocp.args.PyTreeRestore(
              item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=True))
    return restored["params"]
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(directory, abstract_params)


def load_latest_params(model_dir: str | pathlib.Path, abstract_params: Any,
                       step: Optional[int] = None) -> tuple[Any, int]:
  """(params, step) from a run's latest train checkpoint (or the given step), for eval/infer."""
  checkpoints = pathlib.Path(model_dir) / "checkpoints"
  steps = sorted(int(p.name) for p in checkpoints.glob("[0-9]*") if p.name.isdigit())
  if step is not None:
    if step not in steps:
      raise CheckpointError(f"no checkpoint step {step} under {checkpoints} (steps: {steps})")
    try:
      return load_params(checkpoints / str(step), abstract_params), step
    except Exception as error:  # pylint: disable=broad-except
      raise CheckpointError(f"checkpoint step {step} under {checkpoints} cannot be read: "
                            f"{_describe(error)}") from error
  if not steps:
    raise CheckpointError(f"no checkpoints under {checkpoints}")
  failures = []
  for candidate in reversed(steps):
    try:
      return load_params(checkpoints / str(candidate), abstract_params), candidate
    except Exception as error:  # pylint: disable=broad-except
      failures.append(f"step {candidate}: {_describe(error)}")
      logging.warning("checkpoint step %d under %s is damaged and is skipped: %s", candidate,
                      checkpoints, _describe(error))
  raise CheckpointError(f"no intact checkpoint under {checkpoints}: " + "; ".join(failures))
