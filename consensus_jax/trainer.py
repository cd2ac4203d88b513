"""The train loop shared by SFT and the reward model.

What is trained comes from an `Objective` (objectives/base.py); everything else is here:
sharded train state (float32 master params + optax state), one jit-compiled step with explicit
in/out shardings and a donated state, gradient accumulation over micro-batches (`lax.scan`
inside the step), periodic evaluation, TensorBoard scalars and a console progress line, and
orbax checkpoints (restore the latest on start, save every N steps, at the end and on SIGTERM).

Model FLOPs utilisation (MFU) = objective model FLOPs per second / peak matmul FLOP/s of the
run. The peak is `peak_flops_per_device` x devices when given; otherwise the vendor figure of a
known accelerator, or on a CPU host a float32 matmul measured once at start (x processes: the
simulated CPU devices of one process share its cores, so a per-device figure means nothing).
Tokens/s counts every position the model runs over, padding included, as MFU must.
"""
import dataclasses
import math
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Mapping, Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from consensus_jax import checkpointing
from consensus_jax import gin_utils
from consensus_jax import input_pipeline
from consensus_jax import metrics_writer
from consensus_jax import optimizers
from consensus_jax import partitioning
from consensus_jax import programs
from consensus_jax import run_lock
from consensus_jax import train_step as train_step_lib
from consensus_jax.models import flops
from consensus_jax.objectives.base import Objective
from consensus_jax.train_step import TrainState


class NonFiniteLossError(FloatingPointError):
  """The loss (or the updated params) stopped being finite; that state was not saved."""


@dataclasses.dataclass
class TrainResult:
  state: TrainState
  step: int
  preempted: bool
  step_losses: dict[int, float]  # every step this run took
  eval_metrics: dict[int, dict[str, float]]  # step -> eval scalars (0 = before training)


def _check_finite(host_metrics: Mapping[str, float], step: int,
                  checkpointer: checkpointing.Checkpointer) -> None:
  """Raises before a non-finite state can be saved; earlier checkpoints are left as they are.

  The params are checked too: a finite loss measures the params *before* the update, and an
  overflowing update would otherwise be saved unnoticed.
  """
  watched = ("loss", "grad_norm", "param_norm")
  if all(math.isfinite(host_metrics[name]) for name in watched):
    return
  checkpointer.wait_until_finished()
  values = ", ".join(f"{name} {host_metrics[name]}" for name in watched)
  raise NonFiniteLossError(
      f"step {step}: {values} (not finite). Training stopped without saving this state; the "
      f"last good checkpoint is step {checkpointer.latest_step()} in {checkpointer.directory}. "
      "Lower the learning rate or check the data, then restart to resume from that checkpoint.")


def _peak_flops(peak_flops_per_device: Optional[float]) -> Optional[float]:
  if peak_flops_per_device is not None:
    return peak_flops_per_device * jax.device_count()
  device = jax.devices()[0]
  if device.platform == "cpu":
    return flops.measure_matmul_peak_flops() * jax.process_count()
  known = flops.known_peak_flops_per_device(device.device_kind)
  return None if known is None else known * jax.device_count()


class _SigtermFlag:
  """Set by SIGTERM (a TPU preemption notice) in a single-process run.

  Multi-process runs leave SIGTERM to JAX's preemption sync manager instead (see
  Checkpointer.reached_preemption), so that every process stops at the same step.
  """

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_required(model_dir, objective, train_input, total_steps) -> None:
  missing = [name for name, value in (("MODEL_DIR (train.model_dir)", model_dir),
                                      ("train.objective", objective),
                                      ("train.train_input", train_input),
                                      ("TRAIN_STEPS (train.total_steps)", total_steps))
             if value is gin.REQUIRED or value is None]
  if missing:
    raise gin_utils.BindingError(
        f"train: required binding(s) not set: {', '.join(missing)}; set them in a run gin or "
        "on the command line, e.g. --gin.MODEL_DIR=\"'/tmp/run'\"")
  gin_utils.positive_int(total_steps, "TRAIN_STEPS (train.total_steps)")


def _check_intervals(**intervals) -> None:
  for name, (value, minimum) in intervals.items():
    gin_utils.positive_int(value, f"train.{name}", minimum)


def _check_vocabulary_fits(vocabulary: Any, objective: Objective) -> None:
  # A token id past the embedding table would be silently clamped by the gather, not an error.
  model_config = getattr(objective, "config", None)
  vocab_size = getattr(vocabulary, "vocab_size", None)
  if model_config is not None and vocab_size is not None and vocab_size > model_config.vocab_size:
    raise ValueError(f"the vocabulary has {vocab_size} ids but DecoderConfig.vocab_size is "
                     f"{model_config.vocab_size}; make them match")


def _write_gin_config(model_dir: pathlib.Path, name: str, text: str) -> None:
  if jax.process_index() == 0 and text.strip():
    (model_dir / name).write_text(text)


@gin.configurable(denylist=["step_hook"])
def train(*,
          model_dir: str = gin.REQUIRED,
          objective: Objective = gin.REQUIRED,
          train_input: input_pipeline.InputConfig = gin.REQUIRED,
          total_steps: int = gin.REQUIRED,
          eval_input: Optional[input_pipeline.InputConfig] = None,
          eval_every_steps: int = 0,
          eval_batches: Optional[int] = 20,
          eval_at_start: bool = True,
          num_micro_batches: int = 1,
          mesh: Optional[Mesh] = None,
          make_schedule: Callable[..., optax.Schedule] = optimizers.make_schedule,
          make_optimizer: Callable[..., optax.GradientTransformation] =
          optimizers.make_optimizer,
          seed: int = 0,
          checkpoint_every_steps: int = 1000,
          keep_checkpoints: Optional[int] = 3,
          async_checkpointing: bool = True,
          init_params_from: Optional[str] = None,
          log_every_steps: int = 10,
          peak_flops_per_device: Optional[float] = None,
          register_tasks: Optional[Callable[[], Any]] = None,
          step_hook: Optional[Callable[[int], None]] = None) -> TrainResult:
  """Trains `objective` for `total_steps` updates in total (resuming counts earlier steps).

  Args:
    model_dir: checkpoints/, train/ and eval/ TensorBoard runs, config.gin and
      operative_config.gin go here. A checkpoint already there is resumed.
    objective: what to train (e.g. objectives.sft.SFTObjective).
    train_input: the training stream; its batch_size is the global batch.
    total_steps: stop after this many updates.
    eval_input: validation split; evaluated every eval_every_steps (0: only at the end), on
      eval_batches batches (None: the whole split), and before the first step if eval_at_start.
    num_micro_batches: gradient accumulation; batch_size / num_micro_batches rows per pass.
    mesh: defaults to partitioning.make_mesh() (its gin bindings choose data/fsdp/tensor).
    make_schedule: called as make_schedule(total_steps=...) -> learning-rate schedule.
    make_optimizer: called as make_optimizer(learning_rate=schedule) -> optax transformation.
    seed: params init and per-step rngs (the data order is train_input.seed).
    checkpoint_every_steps, keep_checkpoints, async_checkpointing: orbax saves; a final
      save always happens at the last step and on preemption.
    init_params_from: params-only checkpoint (or a train checkpoint step dir) to fine-tune from
      when model_dir has no checkpoint yet.
    log_every_steps: console line and TensorBoard scalars.
    peak_flops_per_device: matmul peak for MFU (see module docstring for the default).
    register_tasks: called first (e.g. input_pipeline.register_synthetic_tasks) so the seqio
      task names exist.
    step_hook: called with the step number after each step (not gin-configurable; tests and
      tooling).
  """
  _check_required(model_dir, objective, train_input, total_steps)
  _check_intervals(checkpoint_every_steps=(checkpoint_every_steps, 1),
                   log_every_steps=(log_every_steps, 1), eval_every_steps=(eval_every_steps, 0),
                   num_micro_batches=(num_micro_batches, 1))
  if register_tasks is not None:
    _check_vocabulary_fits(register_tasks(), objective)
  mesh = partitioning.make_mesh() if mesh is None else mesh
  model_dir = pathlib.Path(model_dir)
  is_primary = jax.process_index() == 0
  if is_primary:
    model_dir.mkdir(parents=True, exist_ok=True)
  # Before anything is written into model_dir: a second live run on it refuses here.
  lock = run_lock.RunLock(model_dir).acquire() if is_primary else None
  try:
    _write_gin_config(model_dir, "config.gin", gin.config_str())
    console = metrics_writer.ConsoleLogger(enabled=is_primary)
    writer = metrics_writer.MetricsWriter(model_dir, enabled=is_primary)

    batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro_rows = train_input.batch_size // num_micro_batches
    if train_input.batch_size % num_micro_batches or micro_rows % batch_shards:
      raise ValueError(
          f"train: batch_size={train_input.batch_size} must split into num_micro_batches="
          f"{num_micro_batches} micro-batches whose size is a multiple of data x fsdp = "
          f"{batch_shards}")

    schedule = make_schedule(total_steps=total_steps)
    optimizer = make_optimizer(learning_rate=schedule)
    abstract_state, state_shardings = train_step_lib.state_shardings(objective, optimizer, mesh)
    replicated = programs.replicated(mesh)

    # Measured before the input pipeline starts its background threads, which would skew it.
    peak = _peak_flops(peak_flops_per_device)
    checkpointer = checkpointing.Checkpointer(model_dir, checkpoint_every_steps, keep_checkpoints,
                                              async_save=async_checkpointing)
    try:
      state, position = _initial_state(
          checkpointer, objective, optimizer, mesh, seed, init_params_from,
          checkpointing.abstract_with_shardings(abstract_state, state_shardings), state_shardings,
          console)
      with jax.set_mesh(mesh):
        return _run(
            state=state, position=position, objective=objective, optimizer=optimizer,
            schedule=schedule, mesh=mesh, model_dir=model_dir, train_input=train_input,
            eval_input=eval_input, eval_every_steps=eval_every_steps, eval_batches=eval_batches,
            eval_at_start=eval_at_start, num_micro_batches=num_micro_batches, seed=seed,
            checkpointer=checkpointer, checkpoint_every_steps=checkpoint_every_steps,
            log_every_steps=log_every_steps, peak=peak,
            total_steps=total_steps, step_hook=step_hook, console=console, writer=writer,
            state_shardings=state_shardings, replicated=replicated)
    finally:
      checkpointer.wait_until_finished()
      checkpointer.close()
      writer.close()
  finally:
    if lock is not None:
      lock.release()


def _initial_state(checkpointer, objective, optimizer, mesh, seed, init_params_from,
                   restore_target, state_shardings, console) -> tuple[TrainState, int]:
  restored = checkpointer.restore_latest_intact(restore_target)
  if restored is not None:
    state, position, step = restored
    console.info("Restored checkpoint step %d from %s", step, checkpointer.directory)
    return state, position
  if init_params_from:
    console.info("Fine-tuning from params checkpoint %s", init_params_from)
    params = checkpointing.load_params(init_params_from, restore_target.params)
  else:
    params = objective.init_params(mesh, jax.random.key(seed))
  init_opt = jax.jit(optimizer.init, in_shardings=(state_shardings.params,),
                     out_shardings=state_shardings.opt_state)
  with jax.set_mesh(mesh):
    opt_state = init_opt(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), state_shardings.step)
  return TrainState(step=step, params=params, opt_state=opt_state), 0


def _evaluate(objective, eval_fn, params, eval_input, mesh, num_batches) -> dict[str, float]:
  converter = objective.make_feature_converter(eval_input.pack)
  loss_sum = denominator = 0.0
  metric_sums: dict[str, float] = {}
  for batch in input_pipeline.eval_batches(eval_input, converter, mesh, num_batches):
    out = eval_fn(params, partitioning.host_local_batch_to_global(batch, mesh))
    loss_sum += float(out.loss_sum)
    denominator += float(out.denominator)
    for name, value in out.metric_sums.items():
      metric_sums[name] = metric_sums.get(name, 0.0) + float(value)
  if denominator == 0:
    raise ValueError(f"evaluation on {eval_input.task}/{eval_input.split} found no target "
                     "tokens (empty split?)")
  return {"loss": loss_sum / denominator, "target_tokens": denominator,
          **{name: value / denominator for name, value in metric_sums.items()}}


def _run(*, state, position, objective, optimizer, schedule, mesh, model_dir, train_input,
         eval_input, eval_every_steps, eval_batches, eval_at_start, num_micro_batches, seed,
         checkpointer, checkpoint_every_steps, log_every_steps, peak,
         total_steps, step_hook, console, writer, state_shardings,
         replicated) -> TrainResult:
  param_shardings = state_shardings.params
  input_pipeline.check_feature_lengths(train_input)
  converter = objective.make_feature_converter(train_input.pack)
  batches = input_pipeline.TrainBatches(train_input, converter, mesh, start_position=position)
  step = int(state.step)
  if step >= total_steps:
    console.info("Nothing to do: checkpoint step %d >= total_steps %d", step, total_steps)
    return TrainResult(state, step, False, {}, {})

  first_batch = next(batches)
  batch_shardings = {name: partitioning.batch_sharding(mesh, value.ndim)
                     for name, value in first_batch.items()}
  train_step = programs.train_step(objective, optimizer, schedule, num_micro_batches, seed,
                                   state_shardings, batch_shardings, mesh)
  eval_fn = programs.eval_step(objective, seed, param_shardings, batch_shardings, mesh)
  tokens_per_step, flops_per_step = train_step_lib.tokens_and_flops(
      objective, {name: value.shape[1] for name, value in first_batch.items()},
      train_input.batch_size)
  console.info("Training from step %d to %d on mesh %s (%d processes); %d tokens and %.3g "
               "model FLOPs per step; peak %s FLOP/s", step, total_steps, dict(mesh.shape),
               jax.process_count(), tokens_per_step, flops_per_step,
               "unknown" if peak is None else f"{peak:.3g}")

  eval_metrics: dict[int, dict[str, float]] = {}

  def run_eval(at_step):
    metrics = _evaluate(objective, eval_fn, state.params, eval_input, mesh, eval_batches)
    eval_metrics[at_step] = metrics
    writer.write_scalars("eval", at_step, metrics)
    console.info("eval step %d: %s", at_step,
                 ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

  if eval_input is not None and eval_at_start and step == 0:
    run_eval(0)

  step_losses: dict[int, float] = {}
  window: list[dict[str, float]] = []  # per-step metrics since the last log line
  timer_start, timed_steps = None, 0  # the first step (compilation) is not timed
  run_start_step = step
  preempted = False
  batch = first_batch
  with _SigtermFlag() as sigterm:
    while step < total_steps:
      if batch is None:
        batch = next(batches)
      state, metrics = train_step(state, partitioning.host_local_batch_to_global(batch, mesh))
      batch = None
      step += 1
      host_metrics = {name: float(value) for name, value in metrics.items()}
      _check_finite(host_metrics, step, checkpointer)
      step_losses[step] = host_metrics["loss"]
      if step == run_start_step + 1:
        # Every configurable has been called by now: record what this run actually used.
        _write_gin_config(model_dir, "operative_config.gin", gin.operative_config_str())
      window.append(host_metrics)
      now = time.perf_counter()
      if timer_start is None:
        timer_start = now
      else:
        timed_steps += 1

      if step % log_every_steps == 0 or step == total_steps:
        scalars = {name: float(np.mean([m[name] for m in window])) for name in window[0]}
        eta = math.inf
        if timed_steps:
          steps_per_second = timed_steps / (now - timer_start)
          scalars.update(steps_per_second=steps_per_second,
                         tokens_per_second=steps_per_second * tokens_per_step)
          if peak:
            scalars["mfu"] = steps_per_second * flops_per_step / peak
          eta = (total_steps - step) / steps_per_second
        writer.write_scalars("train", step, scalars)
        console.info("%s", metrics_writer.progress_line(step, total_steps, scalars, eta))
        window, timer_start, timed_steps = [], now, 0

      if eval_input is not None and ((eval_every_steps and step % eval_every_steps == 0)
                                     or step == total_steps):
        run_eval(step)
      if step_hook is not None:
        step_hook(step)
      preempted = sigterm.raised or checkpointer.reached_preemption(step)
      if step % checkpoint_every_steps == 0 or step == total_steps or preempted:
        checkpointer.save(step, state, batches.position, force=True)
      if preempted:
        console.info("Preempted (SIGTERM) at step %d: checkpoint saved, stopping.", step)
        break

  writer.flush()
  _write_gin_config(model_dir, "operative_config.gin", gin.operative_config_str())
  console.info("Done at step %d (%d steps this run).", step, step - run_start_step)
  return TrainResult(state, step, preempted, step_losses, eval_metrics)
