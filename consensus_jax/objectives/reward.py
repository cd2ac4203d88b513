"""Reward modelling: the personalised RM trained through the shared train loop.

Losses (gin: `RewardObjective.loss_kind`):
  regression             ratings: squared error of sigmoid(score) against (r - 1) / 6
  binary_cross_entropy   agree/disagree votes (Polis); a pass is target 0.5 at the weight the
                         task gives it (tasks.register_tasks(polis_pass_weight=...)), or absent
  bradley_terry          pairs from each member's ranking: -log sigmoid(s_chosen - s_rejected)
  listwise               one member's list of rated candidates on branches after one prefix
                         (RMListFeatureConverter): the regression loss on every candidate plus
                         `pair_weight` x the Bradley-Terry loss over every pair in the list that
                         the member rated differently. The pairs teach what tells one member's
                         candidates apart (the member x candidate interaction); the regression
                         keeps utilities on the rating scale, which welfare rules compare
                         across members.
Pointwise losses read batches of feature_converters.RMFeatureConverter, Bradley-Terry those of
PairwiseRMFeatureConverter, listwise those of RMListFeatureConverter. `backbone_from` starts the
backbone from a params-only or train checkpoint of a Decoder (an SFT run, or an imported Hugging
Face model); the head starts at 0.
"""
import dataclasses
from typing import Any, Optional

import gin
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from consensus_jax import checkpointing
from consensus_jax.data import feature_converters
from consensus_jax.models import flops, reward
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig
from consensus_jax.objectives.base import Batch, LossOutput

_POINTWISE_TERMS = {"regression": reward.regression_terms,
                    "binary_cross_entropy": reward.binary_cross_entropy_terms}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RewardObjective:
  config: DecoderConfig = dataclasses.field(default_factory=lambda: DecoderConfig())
  loss_kind: str = "regression"
  backbone_from: Optional[str] = None
  # Most packed examples per row in a pairwise batch (bounds the per-pair score read-out).
  max_pairs_per_row: int = 16
  # listwise: weight of the within-list Bradley-Terry mean against the regression mean.
  pair_weight: float = 1.0

  def __post_init__(self):
    if self.loss_kind not in reward.LOSSES:
      raise ValueError(f"RewardObjective.loss_kind={self.loss_kind!r} is not one of "
                       f"{reward.LOSSES}")

  @property
  def pairwise(self) -> bool:
    return self.loss_kind == "bradley_terry"

  @property
  def token_features(self) -> tuple[str, ...]:
    if self.pairwise:
      return ("chosen_decoder_input_tokens", "rejected_decoder_input_tokens")
    return ("decoder_input_tokens",)

  def make_feature_converter(self, pack: bool):
    if self.loss_kind == "listwise":
      return feature_converters.RMListFeatureConverter(pack=pack)
    if self.pairwise:
      return feature_converters.PairwiseRMFeatureConverter(pack=pack)
    return feature_converters.RMFeatureConverter(pack=pack)

  def abstract_params(self) -> Any:
    return params_lib.abstract_params(self.config, reward.RewardModel)

  def param_shardings(self, mesh: Mesh) -> Any:
    return params_lib.param_shardings(self.config, mesh, reward.RewardModel)

  def init_params(self, mesh: Mesh, rng: jax.Array) -> Any:
    params = params_lib.init_params(self.config, mesh, rng, reward.RewardModel)
    if self.backbone_from:
      backbone_target = checkpointing.abstract_with_shardings(
          params_lib.abstract_params(self.config), params_lib.param_shardings(self.config, mesh))
      loaded = checkpointing.load_params(self.backbone_from, backbone_target)
      # The RM's backbone never computes logits, so it has no unembedding to take over.
      params = dict(params, backbone={name: loaded[name] for name in params["backbone"]})
    return params

  def _scores(self, params, batch, prefix=""):
    return reward.RewardModel(self.config).apply(
        {"params": params}, batch[f"{prefix}decoder_input_tokens"],
        batch[f"{prefix}decoder_positions"], batch[f"{prefix}decoder_segment_ids"],
        batch.get(f"{prefix}decoder_branch_ids"))

  def _listwise_loss(self, params, batch) -> LossOutput:
    score_BL = self._scores(params, batch)
    weights_BL, targets_BL = batch["score_weights"], batch["score_targets"]
    ratings = jnp.sum(weights_BL)
    regression_sum = jnp.sum(reward.regression_terms(score_BL, targets_BL) * weights_BL)
    pair_loss_sum, pairs, pairs_right = reward.within_list_pairs(
        score_BL, targets_BL, weights_BL, batch["decoder_segment_ids"])
    # Both terms are means (the trainer divides by the ratings): the pair mean is rescaled.
    per_pair = jax.lax.stop_gradient(ratings / jnp.maximum(pairs, 1.0))
    predicted_BL = jax.nn.sigmoid(score_BL)
    return LossOutput(
        loss_sum=regression_sum + self.pair_weight * pair_loss_sum * per_pair,
        denominator=ratings,
        metric_sums={"mean_abs_error_scaled": jnp.sum(jnp.abs(predicted_BL - targets_BL) *
                                                      weights_BL),
                     "pair_accuracy": pairs_right * per_pair,
                     "pair_loss": pair_loss_sum * per_pair})

  def loss(self, params: Any, batch: Batch, rng: jax.Array) -> LossOutput:
    del rng
    if self.loss_kind == "listwise":
      return self._listwise_loss(params, batch)
    if self.pairwise:
      arrays = []
      for side in ("chosen_", "rejected_"):
        arrays += [self._scores(params, batch, side), batch[f"{side}score_weights"],
                   batch[f"{side}decoder_segment_ids"]]
      margin_BS, pair_BS = reward.pair_margins(*arrays, max_segments=self.max_pairs_per_row)
      return LossOutput(
          loss_sum=jnp.sum(jax.nn.softplus(-margin_BS) * pair_BS),
          denominator=jnp.sum(pair_BS),
          metric_sums={"pair_accuracy": jnp.sum((margin_BS > 0) * pair_BS)})
    score_BL = self._scores(params, batch)
    weights_BL = batch["score_weights"]
    targets_BL = batch["score_targets"]
    terms_BL = _POINTWISE_TERMS[self.loss_kind](score_BL, targets_BL)
    predicted_BL = jax.nn.sigmoid(score_BL)
    metrics = {"mean_abs_error_scaled": jnp.sum(jnp.abs(predicted_BL - targets_BL) * weights_BL)}
    if self.loss_kind == "binary_cross_entropy":
      metrics["vote_accuracy"] = jnp.sum(((predicted_BL > 0.5) == (targets_BL > 0.5)) *
                                         weights_BL)
    return LossOutput(loss_sum=jnp.sum(terms_BL * weights_BL), denominator=jnp.sum(weights_BL),
                      metric_sums=metrics)

  def flops_per_token(self, seq_len: int) -> float:
    # The vocabulary projection is skipped; the d_model -> 1 head is negligible.
    unembed = 0 if self.config.tie_embeddings else self.config.vocab_size * self.config.d_model
    return flops.train_flops_per_token(self.config, seq_len) - 6.0 * unembed
