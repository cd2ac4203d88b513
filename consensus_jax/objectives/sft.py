"""Supervised fine-tuning: next-token cross-entropy on the target (statement) tokens only.

Batches come from feature_converters.SFTFeatureConverter. The loss is summed over tokens with
`decoder_loss_weights` (1 on targets, 0 on prompt and padding) and normalised by the number of
target tokens in the global batch (by the trainer, from `denominator`).
"""
import dataclasses
from typing import Any

import gin
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from consensus_jax import gin_utils
from consensus_jax.data import feature_converters
from consensus_jax.models import flops
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder, output_kernel
from consensus_jax.objectives import loss_head
from consensus_jax.objectives.base import Batch, LossOutput


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SFTObjective:
  """Trains a Decoder on prompt -> consensus statement. `config` defaults to gin's DecoderConfig."""
  config: DecoderConfig = dataclasses.field(default_factory=lambda: DecoderConfig())
  # Logit soft-capping is not used; z_loss (PaLM) keeps the softmax normaliser near 1 when >0.
  z_loss: float = 0.0
  # 0: compute the [B, L, V] logits and differentiate through them. > 0: positions per chunk
  # of the fused loss head (loss_head: the same loss and gradients, the logits never in
  # memory; for memory, not speed).
  loss_chunk: int = 0

  def __post_init__(self):
    gin_utils.positive_int(self.loss_chunk, "SFTObjective.loss_chunk (0: unfused)", minimum=0)

  token_features = ("decoder_input_tokens",)

  def make_feature_converter(self, pack: bool) -> feature_converters.SFTFeatureConverter:
    return feature_converters.SFTFeatureConverter(pack=pack)

  def abstract_params(self) -> Any:
    return params_lib.abstract_params(self.config)

  def param_shardings(self, mesh: Mesh) -> Any:
    return params_lib.param_shardings(self.config, mesh)

  def init_params(self, mesh: Mesh, rng: jax.Array) -> Any:
    return params_lib.init_params(self.config, mesh, rng)

  def loss(self, params: Any, batch: Batch, rng: jax.Array) -> LossOutput:
    del rng  # no dropout in the decoder
    targets_BL = batch["decoder_target_tokens"]
    weights_BL = batch["decoder_loss_weights"].astype(jnp.float32)
    outputs = Decoder(self.config).apply(
        {"params": params}, batch["decoder_input_tokens"], batch["decoder_positions"],
        batch["decoder_segment_ids"], compute_logits=not self.loss_chunk)
    if self.loss_chunk:
      loss_sum, correct_sum = loss_head.cross_entropy_sums(
          outputs, output_kernel(self.config, params), targets_BL, weights_BL, self.z_loss,
          self.loss_chunk)
    else:
      loss_sum, correct_sum = loss_head.logits_sums(outputs, targets_BL, weights_BL, self.z_loss)
    return LossOutput(loss_sum=loss_sum, denominator=jnp.sum(weights_BL),
                      metric_sums={"accuracy": correct_sum})

  def flops_per_token(self, seq_len: int) -> float:
    return flops.train_flops_per_token(self.config, seq_len)
