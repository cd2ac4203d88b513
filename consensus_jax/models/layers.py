"""The decoder's building blocks: RMSNorm, rotary embedding, grouped-query attention, MLP.

Every parameter is declared with logical axis names (see partitioning.LOGICAL_AXIS_RULES) and
every main activation is constrained by name, so the same module shards on any mesh.
"""
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from consensus_jax import partitioning
from consensus_jax.models.config import DecoderConfig

# The cache is stored heads-major, [batch, kv_heads, length, head_dim]: the layout attention
# reads, so a decode step never transposes the whole cache.
CACHE_AXES = ("cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")
_NEG_INF = -1e30  # Finite, so fully masked rows (padding) give a uniform softmax, not NaN.


def logical_param(module: nn.Module, name: str, shape: Sequence[int],
                  logical_axes: Sequence[Optional[str]], init: Callable) -> jax.Array:
  return module.param(name, nn.with_logical_partitioning(init, tuple(logical_axes)),
                      tuple(shape), jnp.float32)


def _fan_in_init(fan_in_axes: Sequence[int]):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                          in_axis=tuple(fan_in_axes), out_axis=-1)


class RMSNorm(nn.Module):
  eps: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x_BLE: jax.Array) -> jax.Array:
    scale_E = logical_param(self, "scale", (x_BLE.shape[-1],), ("norm",), nn.initializers.ones)
    x32 = x_BLE.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale_E).astype(self.dtype)


def apply_rotary(x_BLHD: jax.Array, positions_BL: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding in the half-split layout (Hugging Face Llama's `rotate_half`)."""
  half = x_BLHD.shape[-1] // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BLK = positions_BL.astype(jnp.float32)[..., None] * inv_freq
  cos = jnp.cos(angles_BLK)[:, :, None, :]
  sin = jnp.sin(angles_BLK)[:, :, None, :]
  x1, x2 = jnp.split(x_BLHD.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BLHD.dtype)


def attention_mask(segment_ids_BL: jax.Array) -> jax.Array:
  """[B, 1, 1, L, L] bool: causal, within one packed segment, never onto padding (segment 0)."""
  length = segment_ids_BL.shape[1]
  causal_LL = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
  same_segment_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  real_key_B1L = (segment_ids_BL != 0)[:, None, :]
  return (causal_LL & same_segment_BLL & real_key_B1L)[:, None, None]


def _project_heads(x_BLE: jax.Array, w_END: jax.Array) -> jax.Array:
  """x @ W for a [embed, heads, head_dim] kernel, as one 2-D matmul (faster on CPU)."""
  batch, length, _ = x_BLE.shape
  out = jnp.dot(x_BLE, w_END.reshape(w_END.shape[0], -1))
  return out.reshape(batch, length, *w_END.shape[1:])


class Attention(nn.Module):
  """Grouped-query self-attention (K key/value heads shared by groups of G = H / K query heads).

  With `decode_mode="prefill"` the keys and values of a right-padded prompt are written to a KV
  cache of `cache_length` positions (collection "cache"), and each row's index is set to its
  prompt length; with `decode_mode="step"` one token per row is written at that row's index and
  attends to the cache up to it. Projections (`_project`) and attention (`_attend`) are the same
  in every mode, so the cache adds no parameters.
  """
  config: DecoderConfig
  decode_mode: Optional[str] = None
  cache_length: int = 0

  def _project(self, x_BLE, positions_BL):
    cfg = self.config
    dtype, head_dim = cfg.compute_dtype, cfg.resolved_head_dim
    init = _fan_in_init([0])
    wq_EHD = logical_param(self, "query", (cfg.d_model, cfg.num_heads, head_dim),
                           ("embed", "heads", "head_dim"), init)
    wk_EKD = logical_param(self, "key", (cfg.d_model, cfg.num_kv_heads, head_dim),
                           ("embed", "kv_heads", "head_dim"), init)
    wv_EKD = logical_param(self, "value", (cfg.d_model, cfg.num_kv_heads, head_dim),
                           ("embed", "kv_heads", "head_dim"), init)
    x_BLE = x_BLE.astype(dtype)
    q_BLHD = _project_heads(x_BLE, wq_EHD.astype(dtype))
    k_BLKD = _project_heads(x_BLE, wk_EKD.astype(dtype))
    v_BLKD = _project_heads(x_BLE, wv_EKD.astype(dtype))
    q_BLHD = checkpoint_name(apply_rotary(q_BLHD, positions_BL, cfg.rope_theta), "query_proj")
    k_BLKD = checkpoint_name(apply_rotary(k_BLKD, positions_BL, cfg.rope_theta), "key_proj")
    v_BLKD = checkpoint_name(v_BLKD, "value_proj")
    q_BLHD = partitioning.constrain(
        q_BLHD, ("activation_batch", "activation_length", "activation_heads",
                 "activation_head_dim"))
    kv_axes = ("activation_batch", "activation_length", "activation_kv_heads",
               "activation_head_dim")
    return q_BLHD, partitioning.constrain(k_BLKD, kv_axes), partitioning.constrain(v_BLKD,
                                                                                 kv_axes)

  def _attend(self, q_BLHD, k_BKSD, v_BKSD, mask_B11LS):
    cfg = self.config
    batch, length, num_heads, head_dim = q_BLHD.shape
    groups = num_heads // cfg.num_kv_heads
    # Heads-major layouts make every product a plain batched matmul over (B, K): on CPU the
    # einsum with heads in the middle runs several times slower, forward and backward.
    q_BKGLD = q_BLHD.reshape(batch, length, cfg.num_kv_heads, groups, head_dim).transpose(
        0, 2, 3, 1, 4)
    scores_BKGLS = jnp.einsum("BKGLD,BKSD->BKGLS", q_BKGLD, k_BKSD,
                              preferred_element_type=jnp.float32) * head_dim ** -0.5
    scores_BKGLS = jnp.where(mask_B11LS, scores_BKGLS, _NEG_INF)
    probs_BKGLS = jax.nn.softmax(scores_BKGLS, axis=-1).astype(q_BLHD.dtype)
    out_BKGLD = jnp.einsum("BKGLS,BKSD->BKGLD", probs_BKGLS, v_BKSD)
    return out_BKGLD.transpose(0, 3, 1, 2, 4).reshape(batch, length, num_heads, head_dim)

  def _cache(self, batch, dtype):
    cfg = self.config
    shape = (batch, cfg.num_kv_heads, self.cache_length, cfg.resolved_head_dim)
    key = self.variable("cache", "key", jnp.zeros, shape, dtype)
    value = self.variable("cache", "value", jnp.zeros, shape, dtype)
    index = self.variable("cache", "index", jnp.zeros, (batch,), jnp.int32)
    return key, value, index

  def _store(self, variable, value_BKSD):
    variable.value = partitioning.constrain(value_BKSD, CACHE_AXES)

  @nn.compact
  def __call__(self, x_BLE, positions_BL, mask_B11LS, lengths_B=None):
    cfg = self.config
    q_BLHD, k_BLKD, v_BLKD = self._project(x_BLE, positions_BL)
    k_BKLD, v_BKLD = k_BLKD.transpose(0, 2, 1, 3), v_BLKD.transpose(0, 2, 1, 3)
    if self.decode_mode is None:
      out_BLHD = self._attend(q_BLHD, k_BKLD, v_BKLD, mask_B11LS)
    elif self.decode_mode == "prefill":
      batch, length = x_BLE.shape[:2]
      if length > self.cache_length:
        raise ValueError(f"prefill of {length} tokens does not fit a KV cache of "
                         f"{self.cache_length}")
      key, value, index = self._cache(batch, k_BLKD.dtype)
      self._store(key, key.value.at[:, :, :length].set(k_BKLD))
      self._store(value, value.value.at[:, :, :length].set(v_BKLD))
      index.value = lengths_B.astype(jnp.int32)
      out_BLHD = self._attend(q_BLHD, k_BKLD, v_BKLD, mask_B11LS)
    elif self.decode_mode == "step":
      key, value, index = self._cache(x_BLE.shape[0], k_BLKD.dtype)
      slots_BS = jnp.arange(self.cache_length)[None, :]
      write_B1S1 = (slots_BS == index.value[:, None])[:, None, :, None]
      self._store(key, jnp.where(write_B1S1, k_BKLD, key.value))
      self._store(value, jnp.where(write_B1S1, v_BKLD, value.value))
      visible_B111S = (slots_BS <= index.value[:, None])[:, None, None, None, :]
      out_BLHD = self._attend(q_BLHD, key.value, value.value, visible_B111S)
      index.value = index.value + 1
    else:
      raise ValueError(f"decode_mode={self.decode_mode!r} is not None, 'prefill' or 'step'")
    wo_HDE = logical_param(self, "out", (cfg.num_heads, cfg.resolved_head_dim, cfg.d_model),
                           ("heads", "head_dim", "embed"), _fan_in_init([0, 1]))
    batch, length = out_BLHD.shape[:2]
    out_BLE = jnp.dot(out_BLHD.reshape(batch, length, -1),
                      wo_HDE.reshape(-1, cfg.d_model).astype(cfg.compute_dtype))
    return partitioning.constrain(out_BLE, ("activation_batch", "activation_length",
                                            "activation_embed"))


class Mlp(nn.Module):
  """SwiGLU (Llama: silu(x W_gate) * (x W_up) W_down) or GELU (two matrices, Chinchilla)."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x_BLE):
    cfg = self.config
    dtype, init = cfg.compute_dtype, _fan_in_init([0])
    x_BLE = x_BLE.astype(dtype)
    hidden_axes = ("activation_batch", "activation_length", "activation_mlp")
    w_up_EF = logical_param(self, "wi_up", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"), init)
    up_BLF = jnp.einsum("BLE,EF->BLF", x_BLE, w_up_EF.astype(dtype))
    if cfg.mlp_kind == "swiglu":
      w_gate_EF = logical_param(self, "wi_gate", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"),
                                init)
      gate_BLF = jnp.einsum("BLE,EF->BLF", x_BLE, w_gate_EF.astype(dtype))
      hidden_BLF = jax.nn.silu(gate_BLF) * up_BLF
    else:
      hidden_BLF = jax.nn.gelu(up_BLF, approximate=False)
    hidden_BLF = partitioning.constrain(hidden_BLF, hidden_axes)
    w_down_FE = logical_param(self, "wo", (cfg.mlp_dim, cfg.d_model), ("mlp", "embed"), init)
    out_BLE = jnp.einsum("BLF,FE->BLE", hidden_BLF, w_down_FE.astype(dtype))
    return partitioning.constrain(out_BLE, ("activation_batch", "activation_length",
                                            "activation_embed"))
