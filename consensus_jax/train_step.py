"""The train step itself (not yet compiled): one update of the train state from a global batch.

`programs.train_step` compiles it with shardings; `trainer` runs it in the loop; `precompile`
lowers it for a TPU topology. Also here: the train state and the shardings of its parts.
"""
import math
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from consensus_jax import partitioning
from consensus_jax.objectives.base import Objective


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far
  params: Any  # float32 master weights
  opt_state: Any



def fit_to_shapes(shardings: Any, abstract: Any, mesh: Mesh) -> Any:
  """Replicates leaves whose given sharding does not fit their shape.

  optimizer_state_shardings gives every param-structured optimizer leaf its param's sharding;
  Adafactor's factored second moments (v_row, v_col) are param-structured but of lower rank,
  so that sharding cannot apply. They are small (sums over one axis), so replicating is cheap.
  """
  def fit(sharding, leaf):
    spec = sharding.spec
    if len(spec) > len(leaf.shape):
      return NamedSharding(mesh, P())
    for entry, dim in zip(spec, leaf.shape):
      axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
      if dim % math.prod(mesh.shape[a] for a in axes):
        return NamedSharding(mesh, P())
    return sharding
  return jax.tree_util.tree_map(fit, shardings, abstract)


def _split_micro_batches(batch: Mapping[str, jax.Array], num_micro: int) -> dict:
  """[B, ...] -> [num_micro, B / num_micro, ...] without moving rows between devices.

  Micro-batch m takes rows m, m + num_micro, ...: each device's block of rows splits evenly
  over the micro-batches, so the batch axes stay sharded the same way inside every micro-batch.
  """
  def split(x):
    x = x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1)
    spec = P(None, partitioning.BATCH_AXES, *([None] * (x.ndim - 2)))
    return jax.lax.with_sharding_constraint(x, spec)
  return {name: split(value) for name, value in batch.items()}


def _add(a: Any, b: Any) -> Any:
  return jax.tree_util.tree_map(jnp.add, a, b)


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, num_micro_batches: int, seed: int,
                    param_shardings: Any) -> Callable:
  """(state, global batch) -> (new state, replicated scalar metrics); not yet jitted."""
  base_rng = jax.random.key(seed)

  def gradients(params, batch, rng):
    def loss_fn(p):
      out = objective.loss(p, batch, rng)
      return out.loss_sum, out
    (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, out

  def step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(base_rng, state.step)
    if num_micro_batches == 1:
      grads, out = gradients(state.params, batch, rng)
    else:
      def accumulate(carry, micro):
        micro_batch, index = micro
        grads, out = gradients(state.params, micro_batch, jax.random.fold_in(rng, index))
        return _add(carry, (grads, out)), None

      zero_grads = jax.lax.with_sharding_constraint(
          jax.tree_util.tree_map(jnp.zeros_like, state.params), param_shardings)
      _, zero_out = jax.eval_shape(gradients, state.params, batch, rng)
      zero_out = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), zero_out)
      (grads, out), _ = jax.lax.scan(
          accumulate, (zero_grads, zero_out),
          (_split_micro_batches(batch, num_micro_batches), jnp.arange(num_micro_batches)))
    # One normalisation for the whole global batch: accumulation equals one big batch.
    denominator = jnp.maximum(out.denominator, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denominator, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": out.loss_sum / denominator,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),
        "learning_rate": schedule(state.step),
        "target_tokens": out.denominator,
        **{name: value / denominator for name, value in out.metric_sums.items()},
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def state_shardings(objective: Objective, optimizer: optax.GradientTransformation,
                    mesh: Mesh) -> tuple[TrainState, TrainState]:
  """(abstract state, its shardings): params by the rule table, each param-shaped optimizer
  leaf with its param's sharding, the step replicated. Nothing is allocated."""
  param_shardings = objective.param_shardings(mesh)
  abstract_params = objective.abstract_params()
  abstract_opt_state = jax.eval_shape(optimizer.init, abstract_params)
  opt_shardings = fit_to_shapes(
      partitioning.optimizer_state_shardings(optimizer, abstract_opt_state, param_shardings,
                                             mesh), abstract_opt_state, mesh)
  replicated = NamedSharding(mesh, P())
  shardings = TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                        opt_state=abstract_opt_state)
  return abstract, shardings



def tokens_and_flops(objective: Objective, feature_lengths: Mapping[str, int],
                     global_batch_size: int) -> tuple[int, float]:
  """Tokens a step runs over (padding included, as MFU must count them) and its model FLOPs,
  from the lengths of the objective's token features."""
  tokens = total_flops = 0
  for name in objective.token_features:
    length = feature_lengths[name]
    tokens += global_batch_size * length
    total_flops += global_batch_size * length * objective.flops_per_token(length)
  return tokens, total_flops
