"""Optax optimizers and learning-rate schedules, configured by gin.

    make_optimizer.name = 'adamw'          # or 'adafactor'
    make_schedule.peak_learning_rate = 3e-4
    make_schedule.warmup_steps = 100
    make_schedule.decay = 'cosine'         # or 'rsqrt', 'constant'

Gradient clipping (by global norm) runs before the optimizer; weight decay skips norm scales.
Gradient accumulation is not an optax wrapper here: the trainer sums micro-batch gradients
inside one jitted step (see trainer.py), so the optimizer sees one update per step.
"""
from typing import Any, Optional

import gin
import jax
import jax.numpy as jnp
import optax

SCHEDULE_DECAYS = ("cosine", "rsqrt", "constant")
OPTIMIZER_NAMES = ("adamw", "adafactor")


@gin.configurable
def make_schedule(total_steps: int, peak_learning_rate: float = 3e-4, warmup_steps: int = 0,
                  decay: str = "cosine", final_learning_rate_fraction: float = 0.1,
                  decay_steps: Optional[int] = None) -> optax.Schedule:
  """Linear warm-up to the peak, then the chosen decay; step 0 is the first update.

  warm-up: peak x (step + 1) / warmup_steps, so the first update already moves the params.
  cosine: from the peak down to peak x final_learning_rate_fraction at `decay_steps`
    (default total_steps), flat after that.
  rsqrt: peak x sqrt(warmup_steps / (step + 1)) after warm-up (T5's inverse square root).
  constant: the peak after warm-up.
  """
  if decay not in SCHEDULE_DECAYS:
    raise ValueError(f"make_schedule.decay={decay!r} is not one of {SCHEDULE_DECAYS}")
  if warmup_steps < 0 or total_steps <= 0:
    raise ValueError(f"make_schedule: warmup_steps={warmup_steps} must be >= 0 and "
                     f"total_steps={total_steps} > 0")
  decay_steps = total_steps if decay_steps is None else decay_steps
  decay_span = max(decay_steps - warmup_steps, 1)
  warmup_span = max(warmup_steps, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak_learning_rate * jnp.minimum(1.0, (step + 1) / warmup_span)
    if decay == "cosine":
      progress = jnp.clip((step - warmup_steps) / decay_span, 0.0, 1.0)
      cosine = 0.5 * (1 + jnp.cos(jnp.pi * progress))
      after = peak_learning_rate * (final_learning_rate_fraction
                                    + (1 - final_learning_rate_fraction) * cosine)
    elif decay == "rsqrt":
      after = peak_learning_rate * jax.lax.rsqrt(jnp.maximum(step + 1, warmup_span) / warmup_span)
    else:
      after = jnp.full_like(step, peak_learning_rate)
    return jnp.where(step < warmup_steps, warm, after)

  return schedule


def _decay_mask(params: Any) -> Any:
  # Norm scales (leaf name "scale") are not decayed: shrinking them only fights the norm.
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) != "scale", params)


@gin.configurable
def make_optimizer(learning_rate: optax.Schedule, name: str = "adamw",
                   weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.95,
                   eps: float = 1e-8, clip_grad_norm: Optional[float] = 1.0,
                   adafactor_decay_rate: float = 0.8,
                   adafactor_momentum: Optional[float] = None) -> optax.GradientTransformation:
  """AdamW or Adafactor, after optional global-norm gradient clipping.

  Adafactor uses its own update clipping (threshold 1.0) and scale by parameter norm, as in T5.
  """
  if name not in OPTIMIZER_NAMES:
    raise ValueError(f"make_optimizer.name={name!r} is not one of {OPTIMIZER_NAMES}")
  if name == "adamw":
    core = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                       mask=_decay_mask)
  else:
    core = optax.adafactor(learning_rate, decay_rate=adafactor_decay_rate,
                           momentum=adafactor_momentum,
                           weight_decay_rate=weight_decay or None,
                           weight_decay_mask=_decay_mask if weight_decay else None)
  if clip_grad_norm is None:
    return core
  return optax.chain(optax.clip_by_global_norm(clip_grad_norm), core)
