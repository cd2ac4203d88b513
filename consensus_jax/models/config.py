"""The decoder's hyperparameters: one frozen, gin-configurable dataclass."""
import dataclasses
from typing import Optional

import gin
import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
MLP_KINDS = ("swiglu", "gelu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_qkv_proj", "save_qkv_out_proj")
ATTENTION_KINDS = ("softmax", "flash")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Shape and numerics of a Llama-family decoder.

  `mlp_kind="swiglu"` is Llama's three-matrix gated MLP; `"gelu"` is the two-matrix MLP of
  Gopher/Chinchilla. `head_dim` defaults to d_model // num_heads. `dtype` is the compute dtype;
  params are always stored in float32 (master weights).
  """
  vocab_size: int = 8000
  num_layers: int = 4
  d_model: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: Optional[int] = None
  mlp_dim: int = 352
  mlp_kind: str = "swiglu"
  rope_theta: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  max_seq_len: int = 2048
  scan_layers: bool = True
  # With scan_layers: how many layers one loop iteration runs (nn.scan's unroll); num_layers
  # runs the stack as straight-line code with the scanned (checkpoint-compatible) param layout.
  scan_unroll: int = 1
  # Param layout only (see param_layout): one qkv kernel per layer and, for SwiGLU, one kernel
  # for gate and up. The sampler decodes in this layout; checkpoints use the unfused one.
  fused_projections: bool = False
  remat_policy: str = "none"
  dtype: str = "float32"
  # Full-sequence attention: 'softmax' (softmax_attention.py, tuned for CPU) or 'flash' (the
  # Pallas TPU kernel, flash_attention.py: blockwise, never materialises the scores; TPU only).
  # Decoding, and RM lists with branches, always use 'softmax'.
  attention_kind: str = "softmax"
  # 'softmax' over a causal mask: queries in blocks of this many, each against only the keys up
  # to its block's end (softmax_attention.causal_blocks); 0 computes every query x key score.
  attention_query_block: int = 0

  def __post_init__(self):
    problems = []
    if self.num_heads % self.num_kv_heads:
      problems.append(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
    if self.head_dim is None and self.d_model % self.num_heads:
      problems.append(f"num_heads={self.num_heads} must divide d_model={self.d_model} "
                      "(or set head_dim)")
    if self.resolved_head_dim % 2:
      problems.append(f"head_dim={self.resolved_head_dim} must be even for rotary embeddings")
    if self.mlp_kind not in MLP_KINDS:
      problems.append(f"mlp_kind={self.mlp_kind!r} is not one of {MLP_KINDS}")
    if self.remat_policy not in REMAT_POLICIES:
      problems.append(f"remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")
    if not 1 <= self.scan_unroll <= max(1, self.num_layers):
      problems.append(f"scan_unroll={self.scan_unroll} must lie in 1..num_layers="
                      f"{self.num_layers}")
    if self.attention_kind not in ATTENTION_KINDS:
      problems.append(f"attention_kind={self.attention_kind!r} is not one of {ATTENTION_KINDS}")
    if self.attention_query_block < 0:
      problems.append(f"attention_query_block={self.attention_query_block} must be >= 0")
    if self.dtype not in _DTYPES:
      problems.append(f"dtype={self.dtype!r} is not one of {tuple(_DTYPES)}")
    for name in ("vocab_size", "num_layers", "d_model", "num_heads", "num_kv_heads", "mlp_dim"):
      if getattr(self, name) <= 0:
        problems.append(f"{name}={getattr(self, name)} must be positive")
    if problems:
      raise ValueError("DecoderConfig: " + "; ".join(problems))

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  def replace(self, **changes) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)
