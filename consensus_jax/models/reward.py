"""Personalised reward model: decoder backbone + scalar head, its losses, and batched scoring.

The RM reads `question + ONE member's opinion + a candidate` and predicts that member's
agreement. The head gives a score at every position; training reads it where `score_weights_BL`
is non-zero (the last real token of each example, which keeps packing and padding correct), and
scoring reads it at the last real token of each (candidate, member) sequence. A score is a
logit: `utility = sigmoid(score)` lies in (0, 1), the scale of the normalised 1-7 ratings
((r - 1) / 6) and of agree/disagree votes.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from consensus_jax import partitioning
from consensus_jax.models import layers
from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder

LOSSES = ("regression", "bradley_terry", "binary_cross_entropy", "listwise")


class RewardModel(nn.Module):
  """Returns score_BL (float32).

  Params: {'backbone': the Decoder's (without its unembedding), 'score_kernel', 'score_bias'}.
  """
  config: DecoderConfig
  decode: Optional[layers.DecodeSpec] = None  # Shared-prefix scoring (see score_groups).

  @nn.compact
  def __call__(self, tokens_BL, positions_BL=None, segment_ids_BL=None, branch_ids_BL=None):
    hidden_BLE = Decoder(self.config, self.decode, name="backbone")(
        tokens_BL, positions_BL, segment_ids_BL, compute_logits=False,
        branch_ids_BL=branch_ids_BL)
    w_E = layers.logical_param(self, "score_kernel", (self.config.d_model,), ("embed",),
                               nn.initializers.zeros)
    b = layers.logical_param(self, "score_bias", (), (), nn.initializers.zeros)
    score_BL = jnp.einsum("BLE,E->BL", hidden_BLE.astype(jnp.float32), w_E) + b
    return partitioning.constrain(score_BL, ("activation_batch", "activation_length"))


def _weighted_mean(values_BL, weights_BL):
  total = jnp.sum(weights_BL)
  return jnp.sum(values_BL * weights_BL) / jnp.maximum(total, 1e-9)


def regression_terms(score_BL, targets_BL):
  """Squared error between sigmoid(score) and the normalised rating (r - 1) / 6."""
  return jnp.square(jax.nn.sigmoid(score_BL) - targets_BL)


def binary_cross_entropy_terms(score_BL, targets_BL):
  """-log p(target | logit); target 1 agree, 0 disagree, 0.5 a pass (when passes are kept)."""
  return jax.nn.softplus(score_BL) - targets_BL * score_BL


def regression_loss(score_BL, targets_BL, weights_BL):
  return _weighted_mean(regression_terms(score_BL, targets_BL), weights_BL)


def binary_cross_entropy_loss(score_BL, targets_BL, weights_BL):
  return _weighted_mean(binary_cross_entropy_terms(score_BL, targets_BL), weights_BL)


def within_list_pairs(score_BL, targets_BL, weights_BL, segment_ids_BL):
  """Bradley-Terry terms over every pair of scored positions of one packed segment (one
  member's list) whose targets differ: (sum of -log sigmoid(s_better - s_worse), pairs,
  pairs ordered right)."""
  scored_BL = weights_BL > 0
  pair_BLL = (scored_BL[:, :, None] & scored_BL[:, None, :] &
              (segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]) &
              (targets_BL[:, :, None] > targets_BL[:, None, :])).astype(jnp.float32)
  margin_BLL = score_BL[:, :, None] - score_BL[:, None, :]
  return (jnp.sum(jax.nn.softplus(-margin_BLL) * pair_BLL), jnp.sum(pair_BLL),
          jnp.sum((margin_BLL > 0) * pair_BLL))


def segment_scores(score_BL, weights_BL, segment_ids_BL, max_segments: int):
  """Score of each packed segment (read where its weight is set): [B, S] and presence [B, S]."""
  onehot_BLS = (segment_ids_BL[..., None] == jnp.arange(1, max_segments + 1)) & (
      weights_BL[..., None] > 0)
  scores_BS = jnp.einsum("BL,BLS->BS", score_BL, onehot_BLS.astype(score_BL.dtype))
  return scores_BS, jnp.any(onehot_BLS, axis=1)


def pair_margins(chosen_score_BL, chosen_weights_BL, chosen_segment_ids_BL,
                 rejected_score_BL, rejected_weights_BL, rejected_segment_ids_BL,
                 max_segments: int):
  """s_chosen - s_rejected per pair [B, S] and which pairs exist; segment k of both rows pair."""
  chosen_BS, has_chosen_BS = segment_scores(chosen_score_BL, chosen_weights_BL,
                                            chosen_segment_ids_BL, max_segments)
  rejected_BS, has_rejected_BS = segment_scores(rejected_score_BL, rejected_weights_BL,
                                                rejected_segment_ids_BL, max_segments)
  return chosen_BS - rejected_BS, (has_chosen_BS & has_rejected_BS).astype(jnp.float32)


def bradley_terry_loss(*pair_arrays, max_segments: int):
  """Mean of -log sigmoid(s_chosen - s_rejected) over pairs, and the share ranked right."""
  margin_BS, pair_BS = pair_margins(*pair_arrays, max_segments=max_segments)
  loss = _weighted_mean(jax.nn.softplus(-margin_BS), pair_BS)
  accuracy = _weighted_mean((margin_BS > 0).astype(jnp.float32), pair_BS)
  return loss, accuracy


def last_token_index(segment_ids_BL):
  """Index of the last non-padding token of each (unpacked, right-padded) row."""
  return jnp.sum(segment_ids_BL != 0, axis=-1) - 1


def concat_prefix_candidate(prefix_tokens_P, prefix_length, candidate_tokens_C, candidate_length):
  """One right-padded row [P + C]: the prefix's real tokens, then the candidate's, then 0s."""
  total = prefix_tokens_P.shape[0] + candidate_tokens_C.shape[0]
  index_T = jnp.arange(total)
  from_prefix = jnp.take(prefix_tokens_P, jnp.clip(index_T, 0, prefix_tokens_P.shape[0] - 1))
  from_candidate = jnp.take(candidate_tokens_C,
                            jnp.clip(index_T - prefix_length, 0, candidate_tokens_C.shape[0] - 1))
  is_prefix = index_T < prefix_length
  is_candidate = (index_T >= prefix_length) & (index_T < prefix_length + candidate_length)
  tokens_T = jnp.where(is_prefix, from_prefix, jnp.where(is_candidate, from_candidate, 0))
  return tokens_T, (is_prefix | is_candidate).astype(jnp.int32)


def score_groups(config: DecoderConfig, params, prefix_tokens_BMP, prefix_lengths_BM,
                 candidate_tokens_BNC, candidate_lengths_BN,
                 chunk_size: Optional[int] = None):
  """Utilities_BNM = sigmoid(RM score) of every (candidate n, member m) pair of every group b.

  Inputs are token ids, right-padded: each member's prefix (question + their opinion) and each
  candidate (ending with EOS, as the RM tasks build it). Each prefix goes through the backbone
  once, into the decoder's prompt cache; the group's N candidates then run against those cached
  keys and values (DecodeSpec mode "extend"), so the longer part of every pair is not
  recomputed N times. The result equals scoring each concatenated pair on its own. Jit this
  (with the batch sharded over (data, fsdp)); `chunk_size` bounds how many pairs go through the
  backbone at once (whole prefixes with all their candidates).
  """
  batch, members, prefix_len = prefix_tokens_BMP.shape
  num_candidates, candidate_len = candidate_tokens_BNC.shape[1:]
  prefixes = batch * members
  prefix_XP = prefix_tokens_BMP.reshape(prefixes, prefix_len)
  prefix_lengths_X = prefix_lengths_BM.reshape(prefixes)
  candidates_XNC = jnp.broadcast_to(candidate_tokens_BNC[:, None], (
      batch, members, num_candidates, candidate_len)).reshape(prefixes, num_candidates, -1)
  candidate_lengths_XN = jnp.broadcast_to(candidate_lengths_BN[:, None], (
      batch, members, num_candidates)).reshape(prefixes, num_candidates)
  prefill = RewardModel(config, layers.DecodeSpec("prefill", 0, num_candidates))
  extend = RewardModel(config, layers.DecodeSpec("extend", 0, num_candidates))

  def score_prefixes(prefix_YP, prefix_lengths_Y, candidates_YNC, candidate_lengths_YN):
    _, variables = prefill.apply({"params": params}, *layers.left_align(prefix_YP,
                                                                        prefix_lengths_Y),
                                 mutable=["cache"])
    candidates_RC = candidates_YNC.reshape(-1, candidate_len)
    candidate_lengths_R = candidate_lengths_YN.reshape(-1)
    positions_RC = (jnp.repeat(prefix_lengths_Y, num_candidates)[:, None] +
                    jnp.arange(candidate_len))
    segments_RC = (jnp.arange(candidate_len) < candidate_lengths_R[:, None]).astype(jnp.int32)
    score_RC = extend.apply({"params": params, "cache": variables["cache"]}, candidates_RC,
                            positions_RC, segments_RC)
    return jnp.take_along_axis(score_RC, last_token_index(segments_RC)[:, None], axis=1)[:, 0]

  per_chunk = prefixes if chunk_size is None else max(1, chunk_size // num_candidates)
  if per_chunk >= prefixes:
    scores_X = score_prefixes(prefix_XP, prefix_lengths_X, candidates_XNC, candidate_lengths_XN)
  else:
    padded = -(-prefixes // per_chunk) * per_chunk

    def chunks(x, fill):
      pad = [(0, padded - prefixes)] + [(0, 0)] * (x.ndim - 1)
      return jnp.pad(x, pad, constant_values=fill).reshape(-1, per_chunk, *x.shape[1:])

    scores_X = jax.lax.map(lambda args: score_prefixes(*args), (
        chunks(prefix_XP, 0), chunks(prefix_lengths_X, 1), chunks(candidates_XNC, 0),
        chunks(candidate_lengths_XN, 1))).reshape(-1)[:prefixes * num_candidates]
  utilities_BMN = jax.nn.sigmoid(scores_X).reshape(batch, members, num_candidates)
  return jnp.swapaxes(utilities_BMN, 1, 2)
