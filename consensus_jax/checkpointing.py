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
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

STATE_ITEM = "state"
INPUT_ITEM = "input"


class Checkpointer:
  """CheckpointManager for one run: save every N steps (plus forced saves), restore latest."""

  def __init__(self, model_dir: str | pathlib.Path, save_every_steps: int, keep: Optional[int],
               async_save: bool = True):
    self.directory = pathlib.Path(model_dir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every_steps, max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE_ITEM, INPUT_ITEM))

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
  if step is None:
    if not steps:
      raise FileNotFoundError(f"no checkpoints under {checkpoints}")
    step = steps[-1]
  return load_params(checkpoints / str(step), abstract_params), step
