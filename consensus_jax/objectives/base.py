"""The interface between the train loop and what it trains.

The trainer knows nothing about language modelling or reward heads: it asks an Objective for
params (sharded), a feature converter for its seqio task, and a loss. Losses are returned as
*sums* with their denominator (e.g. summed token cross-entropy and the number of target
tokens), so that micro-batches and processes combine exactly: the trainer adds the sums over
the whole global batch and divides once, which makes gradient accumulation equal to one big
batch. Every entry of `metric_sums` shares that denominator and is reported as sum / denominator.
"""
from typing import Any, Mapping, NamedTuple, Protocol

import jax
import seqio
from jax.sharding import Mesh

Batch = Mapping[str, jax.Array]


class LossOutput(NamedTuple):
  loss_sum: jax.Array  # float32 scalar, differentiated
  denominator: jax.Array  # float32 scalar, e.g. number of target tokens; not differentiated
  metric_sums: Mapping[str, jax.Array]  # float32 scalars over the same denominator


class Objective(Protocol):
  """What the train loop needs from SFT, the reward model, or any later objective."""

  # Features of the converted batch that are token sequences [B, L] the model runs over; they
  # set the tokens/s and model-FLOPs figures (a pairwise RM runs over two per example).
  token_features: tuple[str, ...]

  def make_feature_converter(self, pack: bool) -> seqio.FeatureConverter:
    ...

  def abstract_params(self) -> Any:
    """jax.ShapeDtypeStruct tree of the params (float32 master weights)."""

  def param_shardings(self, mesh: Mesh) -> Any:
    ...

  def init_params(self, mesh: Mesh, rng: jax.Array) -> Any:
    """Random params created in their sharded layout."""

  def loss(self, params: Any, batch: Batch, rng: jax.Array) -> LossOutput:
    ...

  def flops_per_token(self, seq_len: int) -> float:
    """Model FLOPs of forward + backward per token of a length-seq_len sequence."""
