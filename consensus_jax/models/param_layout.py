"""Conversions between the decoder's param layouts; every one gives the same function.

- scanned (`scan_layers=True`): one `layers` subtree whose leaves carry a leading layers axis;
- unrolled (`scan_layers=False`): `layers_0 ... layers_{N-1}`;
- fused (`fused_projections=True`): each layer's query/key/value kernels as one `qkv` kernel
  [embed, kv_heads, groups + 2, head_dim] (per key/value head: its query heads, then the key,
  then the value, so sharding kv_heads over `tensor` keeps each group on one shard), and the
  SwiGLU gate/up kernels as one `wi_fused` [embed, 2, mlp].

Checkpoints and Hugging Face files use the scanned or unrolled, unfused layouts. The sampler
decodes in the unrolled, fused layout (`decode_layout`): with 16 rows a decode step is a
chain of matrix-vector-like products, and fewer, wider ones read the same weights faster.
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax.models.config import DecoderConfig


def scanned_to_unrolled(params: dict, num_layers: int) -> dict:
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(num_layers):
    out[f"layers_{i}"] = jax.tree_util.tree_map(lambda w, i=i: w[i], params["layers"])
  return out


def unrolled_to_scanned(params: dict, num_layers: int) -> dict:
  out = {k: v for k, v in params.items() if not k.startswith("layers_")}
  out["layers"] = jax.tree_util.tree_map(
      lambda *ws: np.stack([np.asarray(w) for w in ws]),
      *[params[f"layers_{i}"] for i in range(num_layers)])
  return out


def _fuse_layer(config: DecoderConfig, layer: dict, layer_axis: tuple) -> dict:
  """Fuses one layer's (or a scanned stack's, layer_axis=(L,)) projection kernels."""
  attention = dict(layer["attention"])
  query, key, value = (attention.pop(n) for n in ("query", "key", "value"))
  embed = query.shape[len(layer_axis)]
  groups = config.num_heads // config.num_kv_heads
  query_EKGD = query.reshape(*layer_axis, embed, config.num_kv_heads, groups, -1)
  attention["qkv"] = jnp.concatenate(
      [query_EKGD, key[..., None, :], value[..., None, :]], axis=-2)
  fused = dict(layer, attention=attention)
  if config.mlp_kind == "swiglu":
    mlp = dict(layer["mlp"])
    gate, up = mlp.pop("wi_gate"), mlp.pop("wi_up")
    mlp["wi_fused"] = jnp.stack([gate, up], axis=-2)
    fused["mlp"] = mlp
  return fused


def fuse_projections(config: DecoderConfig, params: dict) -> tuple[DecoderConfig, dict]:
  """The same model with fused projection kernels (a copy of those kernels, made once)."""
  if config.fused_projections:
    return config, params
  out = dict(params)
  if config.scan_layers:
    out["layers"] = _fuse_layer(config, params["layers"], (config.num_layers,))
  else:
    for i in range(config.num_layers):
      out[f"layers_{i}"] = _fuse_layer(config, params[f"layers_{i}"], ())
  return config.replace(fused_projections=True), out


def decode_layout(config: DecoderConfig, params: Any) -> tuple[DecoderConfig, Any]:
  """Unrolled and fused: per-layer weights read in place and each layer's KV cache updated in
  place at every decode step (a scanned stack slices every weight and rewrites every cache each
  step), with the fewest matmuls per layer. Costs a second copy of the layer weights for as
  long as the result lives."""
  if config.scan_layers:
    params = scanned_to_unrolled(params, config.num_layers)
    config = config.replace(scan_layers=False)
  return fuse_projections(config, params)
