"""The SFT loss head's parts: the accuracy count (`target_is_top`, both paths), the logits
path's sums (`logits_sums`), and the fused head (`cross_entropy_sums`): next-token cross-entropy
from the final hidden states, a chunk of positions at a time, with the gradient computed in the
same pass, so the [B, L, V] logits never reach memory.

The logits path writes the logits (at Llama-2-70B's 32,000 ids and 5 x 4096 tokens a chip:
2.6 GB), reads them for the softmax, the loss and the accuracy, and keeps them and their
gradient for dh = dlogits W^T and dW = h^T dlogits. Here each chunk's logits are made, reduced to
the loss, turned into their gradient (w * (softmax - onehot), plus z-loss's term) and multiplied
back into dh and dW at once. The loss's only cotangent is a scalar, so the forward keeps dh and
dW (the sizes of the hidden states and the kernel) and the backward scales them.

It is for memory (SFTObjective.loss_chunk, off by default; the 70B v5p recipes turn it on:
README, "70B on TPU pods"). On the 2-core CPU it is no faster: at `tiny`'s head, where the logits
are 65 MB, 0.94x the logits path's speed, and a whole `tiny` step 1.00x (medians; README,
Benchmarks), once glibc maps XLA's buffers on huge pages as the binaries run (cpu_runtime).

Under a mesh the batch keeps its sharding inside the loop: each batch shard accumulates its own
partial dW (an extra leading axis split like the batch), summed once after the loop, so the
loop body has no collective over the batch axes. A vocabulary split over `tensor` gives the
softmax's max and sum their usual reductions over it. The partial costs each chip a kernel's
worth of float32 (d_model x vocab / tensor): at Llama-2-70B's 8192 x 32000, 1 GiB, more than a
per-chip batch of one 2048-token sequence saves in logits (the v5e recipe keeps the logits path;
README, "70B on TPU pods").

A call without a gradient (eval) runs the loss and accuracy only.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from consensus_jax import partitioning

# Positions per chunk where a caller does not say: with 8 rows, 256 tokens (8 MB of float32
# logits at 8,000 ids; at 5 rows of Llama-2-70B's 32,000, 20 MB a chip).
DEFAULT_CHUNK = 32


def target_is_top(logits_BLV: jax.Array, targets_BL: jax.Array) -> jax.Array:
  """Whether each target's logit is the one largest (a tie for the largest is not a hit).

  Counts the logits at or above the target's instead of comparing an argmax: the same answer
  wherever the largest logit is unique, and on CPU a count is a vectorised sum where argmax's
  (value, index) reduction is not (on `small`'s 2048 x 8,000 logits: 7 against 20 ms).
  """
  target_BL1 = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)
  return jnp.sum(logits_BLV >= target_BL1, axis=-1) == 1


def logits_sums(logits_BLV: jax.Array, targets_BL: jax.Array, weights_BL: jax.Array,
                z_loss: float) -> tuple[jax.Array, jax.Array]:
  """The logits path: (weighted cross-entropy sum, weighted hit count) over materialised
  logits, differentiated by autodiff. z_loss adds z_loss * logsumexp(logits)^2 a position."""
  token_loss_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL)
  if z_loss:
    token_loss_BL += z_loss * jnp.square(jax.nn.logsumexp(logits_BLV, axis=-1))
  correct_BL = target_is_top(logits_BLV, targets_BL).astype(jnp.float32)
  return jnp.sum(token_loss_BL * weights_BL), jnp.sum(correct_BL * weights_BL)


def _chunk_terms(hidden_BCE, unembed_EV, targets_BC, weights_BC, z_loss, with_grad):
  """One chunk's weighted loss sum, weighted hit count and (with_grad) d loss / d logits."""
  logits_BCV = jnp.einsum("BCE,EV->BCV", hidden_BCE, unembed_EV,
                          preferred_element_type=jnp.float32)
  max_BC1 = jnp.max(logits_BCV, axis=-1, keepdims=True)
  exp_BCV = jnp.exp(logits_BCV - max_BC1)
  sum_BC1 = jnp.sum(exp_BCV, axis=-1, keepdims=True)
  log_normaliser_BC = (jnp.log(sum_BC1) + max_BC1)[..., 0]
  target_BC = jnp.take_along_axis(logits_BCV, targets_BC[..., None], axis=-1)[..., 0]
  token_loss_BC = log_normaliser_BC - target_BC
  if z_loss:
    token_loss_BC += z_loss * jnp.square(log_normaliser_BC)
  loss = jnp.sum(token_loss_BC * weights_BC)
  hits = jnp.sum(target_is_top(logits_BCV, targets_BC) * weights_BC)
  if not with_grad:
    return loss, hits, None
  # d/dlogits of w * (lse - target + z lse^2) = w * ((1 + 2 z lse) softmax - onehot).
  scale_BC1 = (weights_BC * (1.0 + 2.0 * z_loss * log_normaliser_BC))[..., None] / sum_BC1
  onehot_BCV = jnp.arange(logits_BCV.shape[-1]) == targets_BC[..., None]
  d_logits_BCV = exp_BCV * scale_BC1 - jnp.where(onehot_BCV, weights_BC[..., None], 0.0)
  return loss, hits, d_logits_BCV


def _batch_shards(batch: int) -> int:
  """How many ways the mesh in context splits a batch of this size (1 without a mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  axes = partitioning.logical_to_mesh_spec(("activation_batch",), (batch,), mesh)[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def _chunked(hidden_BLE, targets_BL, weights_BL, chunk):
  """[B, L, ...] -> [N, S, B/S, chunk, ...]: N chunks of positions (the last padded with weight
  0), the batch as S shards of B/S rows (S: the mesh's split of the batch)."""
  batch, length = targets_BL.shape
  chunk = min(chunk, length)
  pad = -length % chunk
  if pad:
    hidden_BLE = jnp.pad(hidden_BLE, ((0, 0), (0, pad), (0, 0)))
    targets_BL = jnp.pad(targets_BL, ((0, 0), (0, pad)))
    weights_BL = jnp.pad(weights_BL, ((0, 0), (0, pad)))
  shards = _batch_shards(batch)
  chunks = (length + pad) // chunk

  def split(x):
    x = x.reshape(shards, batch // shards, chunks, chunk, *x.shape[2:])
    x = jnp.moveaxis(x, 2, 0)
    return partitioning.constrain(x, (None, "activation_batch") + (None,) * (x.ndim - 2))

  return split(hidden_BLE), split(targets_BL), split(weights_BL), pad


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def cross_entropy_sums(hidden_BLE, unembed_EV, targets_BL, weights_BL, z_loss=0.0,
                       chunk=DEFAULT_CHUNK):
  """(sum of w * cross-entropy (+ z_loss * lse^2), sum of w * target_is_top) over all tokens,
  from hidden states [B, L, E] and the output kernel [E, V] (logits = hidden @ kernel, float32)."""
  return _sums(hidden_BLE, unembed_EV, targets_BL, weights_BL, z_loss, chunk, False)[0]


def _sums(hidden_BLE, unembed_EV, targets_BL, weights_BL, z_loss, chunk, with_grad):
  hidden_NSbCE, targets_NSbC, weights_NSbC, pad = _chunked(
      hidden_BLE, targets_BL, weights_BL.astype(jnp.float32), chunk)
  _, shards, rows, _, embed = hidden_NSbCE.shape
  unembed_EV = unembed_EV.astype(hidden_BLE.dtype)
  d_unembed_SEV = partitioning.constrain(
      jnp.zeros((shards, *unembed_EV.shape), jnp.float32), ("activation_batch", None, "vocab"))

  def body(carry, xs):
    loss, hits, d_unembed_SEV = carry
    hidden_SbCE, targets_SbC, weights_SbC = xs
    flat = lambda x: x.reshape(shards * rows, *x.shape[2:])
    chunk_loss, chunk_hits, d_logits_BCV = _chunk_terms(
        flat(hidden_SbCE), unembed_EV, flat(targets_SbC), flat(weights_SbC), z_loss, with_grad)
    if not with_grad:
      return (loss + chunk_loss, hits + chunk_hits, d_unembed_SEV), None
    d_logits_SbCV = d_logits_BCV.reshape(shards, rows, *d_logits_BCV.shape[1:]).astype(
        hidden_SbCE.dtype)
    d_hidden_SbCE = jnp.einsum("SbCV,EV->SbCE", d_logits_SbCV, unembed_EV,
                               preferred_element_type=jnp.float32)
    d_unembed_SEV += jnp.einsum("SbCE,SbCV->SEV", hidden_SbCE, d_logits_SbCV,
                                preferred_element_type=jnp.float32)
    return (loss + chunk_loss, hits + chunk_hits, d_unembed_SEV), d_hidden_SbCE

  zero = jnp.zeros((), jnp.float32)
  (loss, hits, d_unembed_SEV), d_hidden_NSbCE = jax.lax.scan(
      body, (zero, zero, d_unembed_SEV), (hidden_NSbCE, targets_NSbC, weights_NSbC))
  if not with_grad:
    return (loss, hits), None
  batch, length = targets_BL.shape
  d_hidden_BLE = jnp.moveaxis(d_hidden_NSbCE, 0, 2).reshape(batch, length + pad, embed)
  d_hidden_BLE = d_hidden_BLE[:, :length]
  return (loss, hits), (d_hidden_BLE, jnp.sum(d_unembed_SEV, axis=0))


def _forward(hidden_BLE, unembed_EV, targets_BL, weights_BL, z_loss, chunk):
  sums, (d_hidden_BLE, d_unembed_EV) = _sums(hidden_BLE, unembed_EV, targets_BL, weights_BL,
                                             z_loss, chunk, True)
  # Kept in the inputs' dtypes: the backward only scales them.
  return sums, (d_hidden_BLE.astype(hidden_BLE.dtype), d_unembed_EV.astype(unembed_EV.dtype),
                targets_BL, weights_BL)


def _backward(z_loss, chunk, residuals, d_sums):
  del z_loss, chunk
  d_hidden_BLE, d_unembed_EV, targets_BL, weights_BL = residuals
  d_loss = d_sums[0]  # The hit count is a metric: its cotangent is ignored.
  return ((d_loss * d_hidden_BLE).astype(d_hidden_BLE.dtype),
          (d_loss * d_unembed_EV).astype(d_unembed_EV.dtype),
          np.zeros(targets_BL.shape, jax.dtypes.float0),
          jnp.zeros_like(weights_BL))


cross_entropy_sums.defvjp(_forward, _backward)
