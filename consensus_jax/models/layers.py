"""The decoder's building blocks: RMSNorm, rotary embedding, grouped-query attention, MLP.

Every parameter is declared with logical axis names (see partitioning.LOGICAL_AXIS_RULES) and
every main activation is constrained by name, so the same module shards on any mesh.
"""
import dataclasses
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from consensus_jax import partitioning
from consensus_jax.models import flash_attention, softmax_attention
from consensus_jax.models.config import DecoderConfig

# The cache is stored heads-major, [batch, kv_heads, length, head_dim]: the layout attention
# reads, so a decode step never transposes the whole cache.
CACHE_AXES = ("cache_batch", "cache_kv_heads", "cache_length", "cache_head_dim")
_NEG_INF = softmax_attention.NEG_INF


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
  """Rotary embedding in the half-split layout (Hugging Face Llama's `rotate_half`).

  x * [cos, cos] + swap_halves(x) * [-sin, sin]: the half swap is a reverse over a size-2 axis,
  which XLA fuses into the elementwise pass forward and backward, where splitting x and
  concatenating the rotated halves made the backward an extra concatenating copy (on CPU).
  """
  half = x_BLHD.shape[-1] // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BLK = positions_BL.astype(jnp.float32)[..., None] * inv_freq
  cos_BLK, sin_BLK = jnp.cos(angles_BLK), jnp.sin(angles_BLK)
  cos_BL1D = jnp.concatenate([cos_BLK, cos_BLK], axis=-1)[:, :, None, :]
  sin_BL1D = jnp.concatenate([-sin_BLK, sin_BLK], axis=-1)[:, :, None, :]
  x = x_BLHD.astype(jnp.float32)
  swapped = x.reshape(*x.shape[:-1], 2, half)[..., ::-1, :].reshape(x.shape)
  return (x * cos_BL1D + swapped * sin_BL1D).astype(x_BLHD.dtype)


def attention_mask(segment_ids_BL: jax.Array,
                   branch_ids_BL: Optional[jax.Array] = None) -> jax.Array:
  """[B, 1, 1, L, L] bool: causal, within one packed segment, never onto padding (segment 0).

  With `branch_ids_BL` a segment is a tree of one trunk (branch 0) and branches 1, 2, ...: a
  token sees the trunk before it and its own branch, never another branch. The RM trains on a
  member prefix (the trunk) followed by several candidates (branches) this way, each candidate
  scored as if it alone followed the prefix (as the prompt cache serves it).
  """
  length = segment_ids_BL.shape[1]
  causal_LL = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))
  same_segment_BLL = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  real_key_B1L = (segment_ids_BL != 0)[:, None, :]
  mask_BLL = causal_LL & same_segment_BLL & real_key_B1L
  if branch_ids_BL is not None:
    mask_BLL &= ((branch_ids_BL[:, None, :] == 0) |
                 (branch_ids_BL[:, None, :] == branch_ids_BL[:, :, None]))
  return mask_BLL[:, None, None]


def left_align(tokens_BP: jax.Array, lengths_B: jax.Array):
  """Right-padded prompts -> left-padded tokens, positions and segment ids (0 on the padding):
  every row's last prompt token sits in the last slot, as decoding's prefill expects."""
  prompt_len = tokens_BP.shape[1]
  shifted_BP = jnp.arange(prompt_len)[None, :] - (prompt_len - lengths_B)[:, None]
  real_BP = shifted_BP >= 0
  tokens_BP = jnp.where(real_BP, jnp.take_along_axis(tokens_BP, jnp.maximum(shifted_BP, 0),
                                                     axis=1), 0)
  return tokens_BP, jnp.maximum(shifted_BP, 0), real_BP.astype(jnp.int32)


def dense(x_BLI: jax.Array, w_IO: jax.Array, preferred_element_type=None) -> jax.Array:
  """x @ W over x's last axis and W's first: [B, L, I] x [I, ...] -> [B, L, ...].

  Runs as one 2-D matmul with batch and length folded into one axis. With two contracting
  axes (B and L) the weight gradient makes XLA on CPU write the output gradient transposed
  first; folded, it is a plain [I, B*L] x [B*L, O] matmul (SwiGLU fwd+bwd of `small` at 8 x 256:
  211 against 271 ms).
  """
  batch, length, inner = x_BLI.shape
  out_NO = jnp.dot(x_BLI.reshape(batch * length, inner), w_IO.reshape(inner, -1),
                   preferred_element_type=preferred_element_type)
  return out_NO.reshape(batch, length, *w_IO.shape[1:])


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """How the decoder runs for sampling (see Attention); static, so jit specialises on it."""
  # "prefill": the prompts; "step": one token per sample row, written to the sample cache;
  # "extend": a continuation of several tokens per sample row, read against the prompt cache
  # and causally against itself, written nowhere (scoring candidates after a shared prefix).
  mode: str
  new_tokens: int  # Sample-cache slots: the most tokens a sample generates (0 for "extend").
  samples_per_prompt: int = 1
  chunk_size: int = 0  # Sample-cache slots per chunk; 0: one chunk of new_tokens.
  chunk: int = 0  # Step mode: the chunk this step writes; it reads chunks 0..chunk.

  def __post_init__(self):
    if self.mode not in ("prefill", "step", "extend"):
      raise ValueError(f"DecodeSpec.mode={self.mode!r} is not 'prefill', 'step' or 'extend'")
    if self.mode == "step" and not 0 <= self.chunk < self.num_chunks:
      raise ValueError(f"DecodeSpec.chunk={self.chunk} is not in [0, {self.num_chunks})")

  @property
  def resolved_chunk_size(self) -> int:
    return self.chunk_size or self.new_tokens

  @property
  def num_chunks(self) -> int:
    return -(-self.new_tokens // self.resolved_chunk_size) if self.new_tokens else 0

  def chunk_slots(self, chunk: int) -> tuple[int, int]:
    """(first slot, number of slots) of a sample-cache chunk."""
    first = chunk * self.resolved_chunk_size
    return first, min(self.resolved_chunk_size, self.new_tokens - first)


def _by_prompt(x_RKGZ: jax.Array, prompts: int, samples: int) -> jax.Array:
  """[P*N, K, G, Z] -> [P, K, N*G, Z]: the query heads of a prompt's N sample rows side by side,
  so one matmul per prompt reads its cached keys for all of them."""
  _, kv_heads, groups, _ = x_RKGZ.shape
  return x_RKGZ.reshape(prompts, samples, kv_heads, groups, -1).transpose(
      0, 2, 1, 3, 4).reshape(prompts, kv_heads, samples * groups, -1)


def _by_row(x_PKXZ: jax.Array, samples: int) -> jax.Array:
  """The inverse of _by_prompt: [P, K, N*G, Z] -> [P*N, K, G, Z]."""
  prompts, kv_heads, columns, _ = x_PKXZ.shape
  return x_PKXZ.reshape(prompts, kv_heads, samples, columns // samples, -1).transpose(
      0, 2, 1, 3, 4).reshape(prompts * samples, kv_heads, columns // samples, -1)


class Attention(nn.Module):
  """Grouped-query self-attention (K key/value heads shared by groups of G = H / K query heads).

  Decoding keeps two caches (collection "cache"), because each prompt is sampled N times:
  - the prompt cache `prompt_key`/`prompt_value` [B, K, P, D], one per prompt, written in
    mode "prefill" from a left-padded prompt batch (every row's last token in the last slot,
    segment id 0 on the padding in front; `start` is each row's first real slot);
  - the sample cache `key_c`/`value_c` [B*N, K, chunk, D], chunks c of the T = new_tokens
    generated slots, where mode "step" writes one token per row (rows b*N..b*N+N-1 are prompt
    b's samples) at slot `index`, the same slot for every row.
  Mode "extend" runs several tokens per sample row against the prompt cache and causally
  against themselves, and writes nothing: the reward model scores candidates after a shared
  prefix this way. A step reads each prompt's keys once for its N samples instead of N tiled
  copies, and only the sample-cache chunks written so far, so a memory-bound step reads little
  more than it uses; the shared slot makes the write one in-place dynamic_update_slice. Projections
  (`_project`) are the same in every mode, so the caches add no parameters.
  """
  config: DecoderConfig
  decode: Optional[DecodeSpec] = None

  def _project(self, x_BLE, positions_BL):
    cfg = self.config
    dtype, head_dim = cfg.compute_dtype, cfg.resolved_head_dim
    init = _fan_in_init([0])
    x_BLE = x_BLE.astype(dtype)
    if cfg.fused_projections:
      groups = cfg.num_heads // cfg.num_kv_heads
      w_EKXD = logical_param(self, "qkv", (cfg.d_model, cfg.num_kv_heads, groups + 2, head_dim),
                             ("embed", "kv_heads", "qkv", "head_dim"), init)
      qkv_BLKXD = dense(x_BLE, w_EKXD.astype(dtype))
      batch, length = x_BLE.shape[:2]
      q_BLHD = qkv_BLKXD[:, :, :, :groups].reshape(batch, length, cfg.num_heads, head_dim)
      k_BLKD, v_BLKD = qkv_BLKXD[:, :, :, groups], qkv_BLKXD[:, :, :, groups + 1]
    else:
      wq_EHD = logical_param(self, "query", (cfg.d_model, cfg.num_heads, head_dim),
                             ("embed", "heads", "head_dim"), init)
      wk_EKD = logical_param(self, "key", (cfg.d_model, cfg.num_kv_heads, head_dim),
                             ("embed", "kv_heads", "head_dim"), init)
      wv_EKD = logical_param(self, "value", (cfg.d_model, cfg.num_kv_heads, head_dim),
                             ("embed", "kv_heads", "head_dim"), init)
      q_BLHD = dense(x_BLE, wq_EHD.astype(dtype))
      k_BLKD = dense(x_BLE, wk_EKD.astype(dtype))
      v_BLKD = dense(x_BLE, wv_EKD.astype(dtype))
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
    """mask_B11LS: the dense mask, or segment_ids_BL where the decoder chose flash attention."""
    cfg = self.config
    batch, length, num_heads, head_dim = q_BLHD.shape
    if mask_B11LS.ndim == 2 and flash_attention.supports(length):
      out_BLHD = flash_attention.attention(q_BLHD * head_dim ** -0.5, k_BKSD, v_BKSD,
                                           mask_B11LS)
      return checkpoint_name(out_BLHD, "attention_out")
    if mask_B11LS.ndim == 2:  # Segment ids, at a length the kernel does not take.
      mask_B11LS = attention_mask(mask_B11LS)
    groups = num_heads // cfg.num_kv_heads
    # Heads-major layouts make every product a plain batched matmul over (B, K): on CPU the
    # einsum with heads in the middle runs several times slower, forward and backward.
    q_BKGLD = (q_BLHD * head_dim ** -0.5).reshape(
        batch, length, cfg.num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    out_BKGLD = softmax_attention.causal_blocks(q_BKGLD, k_BKSD, v_BKSD, mask_B11LS,
                                                cfg.attention_query_block)
    return checkpoint_name(
        out_BKGLD.transpose(0, 3, 1, 2, 4).reshape(batch, length, num_heads, head_dim),
        "attention_out")

  def _cache_variable(self, name, shape, dtype):
    return self.variable("cache", name, jnp.zeros, shape, dtype)

  def _store(self, variable, value_BKSD):
    variable.value = partitioning.constrain(value_BKSD, CACHE_AXES)

  def _prefill(self, q_BLHD, k_BKLD, v_BKLD, mask_B11LS, lengths_B):
    cfg, spec = self.config, self.decode
    batch, _, prompt_len, head_dim = k_BKLD.shape
    self._store(self._cache_variable("prompt_key", k_BKLD.shape, k_BKLD.dtype), k_BKLD)
    self._store(self._cache_variable("prompt_value", v_BKLD.shape, v_BKLD.dtype), v_BKLD)
    self._cache_variable("start", (batch,), jnp.int32).value = (
        prompt_len - lengths_B).astype(jnp.int32)
    for chunk in range(spec.num_chunks):
      shape = (batch * spec.samples_per_prompt, cfg.num_kv_heads, spec.chunk_slots(chunk)[1],
               head_dim)
      for name in ("key", "value"):
        variable = self._cache_variable(f"{name}_{chunk}", shape, k_BKLD.dtype)
        self._store(variable, variable.value)
    self._cache_variable("index", (), jnp.int32).value = jnp.int32(0)
    return self._attend(q_BLHD, k_BKLD, v_BKLD, mask_B11LS)

  def _step(self, q_BLHD, k_BKLD, v_BKLD):
    """One token per row: written to the sample cache, then attends to its prompt's cache and
    its own sample's cache so far."""
    spec = self.decode
    if q_BLHD.shape[1] != 1:
      raise ValueError(f"decode step: one token per row, got {q_BLHD.shape[1]}")
    index = self.get_variable("cache", "index")
    first, _ = spec.chunk_slots(spec.chunk)
    for name, new_BK1D in (("key", k_BKLD), ("value", v_BKLD)):
      variable = self.variable("cache", f"{name}_{spec.chunk}")
      self._store(variable, jax.lax.dynamic_update_slice(variable.value, new_BK1D,
                                                         (0, 0, index - first, 0)))
    self.variable("cache", "index").value = index + 1
    own_keys = [self.get_variable("cache", f"key_{c}") for c in range(spec.chunk + 1)]
    own_values = [self.get_variable("cache", f"value_{c}") for c in range(spec.chunk + 1)]
    own_slots_T = jnp.arange(sum(k.shape[2] for k in own_keys))
    return self._attend_after_prompt(q_BLHD, own_keys, own_values, own_slots_T <= index)

  def _extend(self, q_BLHD, k_BKLD, v_BKLD, mask_B11LS):
    """L tokens per sample row after its prompt: the prompt cache, then causally its own."""
    return self._attend_after_prompt(q_BLHD, [k_BKLD], [v_BKLD], mask_B11LS)

  def _attend_after_prompt(self, q_BLHD, own_keys, own_values, own_visible):
    """Sample rows' queries against their prompt's cache and their own keys.

    own_keys/own_values: consecutive parts [R, K, T_i, D] of each row's own keys and values;
    own_visible: which of the sum(T_i) own slots each query sees, broadcastable to
    [R, K, G, L, sum(T_i)].
    """
    cfg, samples = self.config, self.decode.samples_per_prompt
    rows, length, num_heads, head_dim = q_BLHD.shape
    kv_heads = cfg.num_kv_heads
    groups = num_heads // kv_heads
    prompt_key, prompt_value, start = (
        self.get_variable("cache", n) for n in ("prompt_key", "prompt_value", "start"))
    if prompt_key is None:
      raise ValueError(f"decode {self.decode.mode} before prefill: the cache has no prompt keys")
    prompts, _, prompt_len, _ = prompt_key.shape
    scale = head_dim ** -0.5
    # Query heads and positions share one axis (G*L) so the prompt part is one matmul per
    # prompt for all its rows.
    q_RKGLD = q_BLHD.reshape(rows, length, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    q_RKXD = q_RKGLD.reshape(rows, kv_heads, groups * length, head_dim)
    prompt_scores_PKXS = jnp.einsum("PKXD,PKSD->PKXS", _by_prompt(q_RKXD, prompts, samples),
                                    prompt_key, preferred_element_type=jnp.float32) * scale
    prompt_visible_P11S = (jnp.arange(prompt_len)[None, :] >= start[:, None])[:, None, None]
    prompt_scores_RKGLS = _by_row(jnp.where(prompt_visible_P11S, prompt_scores_PKXS, _NEG_INF),
                                  samples).reshape(rows, kv_heads, groups, length, prompt_len)
    own_scores_RKGLT = jnp.concatenate(
        [jnp.einsum("RKGLD,RKTD->RKGLT", q_RKGLD, k, preferred_element_type=jnp.float32)
         for k in own_keys], axis=-1) * scale
    own_scores_RKGLT = jnp.where(own_visible, own_scores_RKGLT, _NEG_INF)
    probs = jax.nn.softmax(jnp.concatenate([prompt_scores_RKGLS, own_scores_RKGLT], axis=-1),
                           axis=-1).astype(q_BLHD.dtype)
    prompt_probs_RKXS = probs[..., :prompt_len].reshape(rows, kv_heads, groups * length,
                                                        prompt_len)
    out_RKGLD = _by_row(
        jnp.einsum("PKXS,PKSD->PKXD", _by_prompt(prompt_probs_RKXS, prompts, samples),
                   prompt_value), samples).reshape(rows, kv_heads, groups, length, head_dim)
    offset = prompt_len
    for v in own_values:
      out_RKGLD += jnp.einsum("RKGLT,RKTD->RKGLD", probs[..., offset:offset + v.shape[2]], v)
      offset += v.shape[2]
    return out_RKGLD.transpose(0, 3, 1, 2, 4).reshape(rows, length, num_heads, head_dim)

  @nn.compact
  def __call__(self, x_BLE, positions_BL, mask_B11LS, lengths_B=None):
    cfg = self.config
    q_BLHD, k_BLKD, v_BLKD = self._project(x_BLE, positions_BL)
    k_BKLD, v_BKLD = k_BLKD.transpose(0, 2, 1, 3), v_BLKD.transpose(0, 2, 1, 3)
    if self.decode is None:
      out_BLHD = self._attend(q_BLHD, k_BKLD, v_BKLD, mask_B11LS)
    elif self.decode.mode == "prefill":
      out_BLHD = self._prefill(q_BLHD, k_BKLD, v_BKLD, mask_B11LS, lengths_B)
    elif self.decode.mode == "step":
      out_BLHD = self._step(q_BLHD, k_BKLD, v_BKLD)
    else:
      out_BLHD = self._extend(q_BLHD, k_BKLD, v_BKLD, mask_B11LS)
    wo_HDE = logical_param(self, "out", (cfg.num_heads, cfg.resolved_head_dim, cfg.d_model),
                           ("heads", "head_dim", "embed"), _fan_in_init([0, 1]))
    batch, length = out_BLHD.shape[:2]
    out_BLE = dense(out_BLHD.reshape(batch, length, -1),
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
    if cfg.mlp_kind == "swiglu" and cfg.fused_projections:
      w_EXF = logical_param(self, "wi_fused", (cfg.d_model, 2, cfg.mlp_dim),
                            ("embed", "gate_up", "mlp"), init)
      gate_up_BLXF = dense(x_BLE, w_EXF.astype(dtype))
      hidden_BLF = jax.nn.silu(gate_up_BLXF[:, :, 0]) * gate_up_BLXF[:, :, 1]
    elif cfg.mlp_kind == "swiglu":
      w_up_EF = logical_param(self, "wi_up", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"), init)
      up_BLF = dense(x_BLE, w_up_EF.astype(dtype))
      w_gate_EF = logical_param(self, "wi_gate", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"),
                                init)
      gate_BLF = dense(x_BLE, w_gate_EF.astype(dtype))
      hidden_BLF = jax.nn.silu(gate_BLF) * up_BLF
    else:
      w_up_EF = logical_param(self, "wi_up", (cfg.d_model, cfg.mlp_dim), ("embed", "mlp"), init)
      up_BLF = dense(x_BLE, w_up_EF.astype(dtype))
      hidden_BLF = jax.nn.gelu(up_BLF, approximate=False)
    hidden_BLF = partitioning.constrain(hidden_BLF, hidden_axes)
    w_down_FE = logical_param(self, "wo", (cfg.mlp_dim, cfg.d_model), ("mlp", "embed"), init)
    out_BLE = dense(hidden_BLF, w_down_FE.astype(dtype))
    return partitioning.constrain(out_BLE, ("activation_batch", "activation_length",
                                            "activation_embed"))
