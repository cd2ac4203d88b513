"""Llama-family decoder LM: embed -> N x (pre-norm attention, pre-norm MLP) -> norm -> logits.

Layers are stacked with `nn.scan` (one compiled layer body, params with a leading 'layers' axis;
`scan_unroll` layers per loop iteration, all of them for straight-line code in the same layout)
or unrolled (`scan_layers=False`, params `layers_0 ... layers_{N-1}`), each under `nn.remat`
with the configured policy. Packed sequences are described by `segment_ids_BL` (0 = padding)
and `positions_BL` (restart at 0 in each segment).
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from consensus_jax import partitioning
from consensus_jax.models import layers
from consensus_jax.models.config import DecoderConfig

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv_proj": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj"),
    # Also the attention output: the backward then recomputes no attention at all.
    "save_qkv_out_proj": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "attention_out"),
}
_EMBED_AXES = ("activation_batch", "activation_length", "activation_embed")


class DecoderLayer(nn.Module):
  config: DecoderConfig
  scanned: bool = False
  decode: Optional[layers.DecodeSpec] = None

  @nn.compact
  def __call__(self, x_BLE, positions_BL, mask_B11LS, lengths_B):
    cfg = self.config
    normed = layers.RMSNorm(cfg.norm_eps, cfg.compute_dtype, name="pre_attention_norm")(x_BLE)
    attention = layers.Attention(cfg, self.decode, name="attention")
    x_BLE = x_BLE + attention(normed, positions_BL, mask_B11LS, lengths_B)
    normed = layers.RMSNorm(cfg.norm_eps, cfg.compute_dtype, name="pre_mlp_norm")(x_BLE)
    x_BLE = partitioning.constrain(x_BLE + layers.Mlp(cfg, name="mlp")(normed), _EMBED_AXES)
    return (x_BLE, None) if self.scanned else x_BLE


def _layer_class(cfg: DecoderConfig):
  if cfg.remat_policy == "none":
    return DecoderLayer
  # Under scan the loop already stops XLA from merging recomputation with the forward pass.
  return nn.remat(DecoderLayer, policy=_REMAT_POLICIES[cfg.remat_policy],
                  prevent_cse=not cfg.scan_layers)


class Decoder(nn.Module):
  """Returns float32 logits_BLV and, with `return_hidden`, the final-norm hidden states_BLE.

  For sampling (`decode`, see layers.DecodeSpec), mode "prefill" runs a left-padded prompt
  batch (segment ids 0 on the padding) and sets up the KV caches; mode "step" feeds one token
  per sample row at `positions_BL` (the row's current length). Apply with `mutable=["cache"]`.
  `branch_ids_BL` (training only) makes each packed segment a prefix with branches that do
  not see each other (layers.attention_mask).
  """
  config: DecoderConfig
  decode: Optional[layers.DecodeSpec] = None

  @nn.compact
  def __call__(self, tokens_BL: jax.Array, positions_BL: Optional[jax.Array] = None,
               segment_ids_BL: Optional[jax.Array] = None, *, return_hidden: bool = False,
               compute_logits: bool = True, branch_ids_BL: Optional[jax.Array] = None):
    cfg = self.config
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(tokens_BL.shape[1]), tokens_BL.shape)
    if segment_ids_BL is None:
      segment_ids_BL = jnp.ones_like(tokens_BL)
    if cfg.attention_kind == "flash" and self.decode is None and branch_ids_BL is None:
      # The flash kernel masks from the segment ids itself: no [B, L, L] mask is built.
      mask_B11LS = segment_ids_BL
    else:
      mask_B11LS = layers.attention_mask(segment_ids_BL, branch_ids_BL)
    lengths_B = jnp.sum(segment_ids_BL != 0, axis=-1)

    embedding_VE = layers.logical_param(self, "embedding", (cfg.vocab_size, cfg.d_model),
                                        ("vocab", "embed"), nn.initializers.normal(1.0))
    x_BLE = jnp.take(embedding_VE, tokens_BL, axis=0).astype(cfg.compute_dtype)
    x_BLE = partitioning.constrain(x_BLE, _EMBED_AXES)

    layer_cls = _layer_class(cfg)
    if cfg.scan_layers:
      stack = nn.scan(layer_cls, variable_axes={"params": 0, "cache": 0},
                      split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                      length=cfg.num_layers, unroll=cfg.scan_unroll,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x_BLE, _ = stack(cfg, True, self.decode, name="layers")(x_BLE, positions_BL, mask_B11LS,
                                                              lengths_B)
    else:
      for i in range(cfg.num_layers):
        x_BLE = layer_cls(cfg, False, self.decode, name=f"layers_{i}")(
            x_BLE, positions_BL, mask_B11LS, lengths_B)

    hidden_BLE = layers.RMSNorm(cfg.norm_eps, cfg.compute_dtype, name="final_norm")(x_BLE)
    if not compute_logits:
      return hidden_BLE
    if cfg.tie_embeddings:  # As output_kernel reads it from a params dict.
      unembed_EV = embedding_VE.T
    else:
      unembed_EV = layers.logical_param(self, "unembed", (cfg.d_model, cfg.vocab_size),
                                        ("embed", "vocab"),
                                        nn.initializers.variance_scaling(1.0, "fan_in",
                                                                         "truncated_normal"))
    logits_BLV = layers.dense(hidden_BLE, unembed_EV.astype(cfg.compute_dtype),
                              preferred_element_type=jnp.float32)
    logits_BLV = partitioning.constrain(
        logits_BLV, ("activation_batch", "activation_length", "activation_vocab"))
    return (logits_BLV, hidden_BLE) if return_hidden else logits_BLV


def output_kernel(config: DecoderConfig, params: Any) -> jax.Array:
  """The [E, V] kernel a Decoder's logits are computed with, from its params: the unembedding,
  or the embedding's transpose where they are tied (a loss head that takes hidden states)."""
  return params["embedding"].T if config.tie_embeddings else params["unembed"]
