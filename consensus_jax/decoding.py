"""Batched temperature sampling with a KV cache, in one compiled `lax.while_loop`.

Prompts arrive right-padded with per-row lengths. They are prefilled once, the cache and the
first-token logits are tiled to batch x num_samples rows, and each loop step samples one token
per row, writes it, and feeds it back at that row's own position. A row that emits EOS stops
(later slots hold 0); the loop ends when every row has stopped or `max_new_tokens` is reached.
Temperature 0 is greedy; top-k and top-p restrict the distribution before sampling.

Returned log-probabilities are under the model's own distribution (temperature 1, no top-k/p),
summed over the generated tokens including EOS; the samples of each prompt come sorted by it,
best first. Prompt lengths are padded up to `prompt_buckets` on the host (`pad_to_bucket`) so
different prompt lengths reuse one compiled program.
"""
import dataclasses
from typing import Any, NamedTuple, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder

PAD_ID = 0


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """The static part of the sampling loop (hashable, so jit specialises on it)."""
  max_new_tokens: int = 64
  num_samples: int = 16
  temperature: float = 1.0
  top_k: int = 0  # 0: off.
  top_p: float = 1.0  # 1.0: off.
  eos_id: int = 1
  prompt_buckets: tuple[int, ...] = (64, 128, 256, 512, 1024)

  def __post_init__(self):
    if self.max_new_tokens <= 0 or self.num_samples <= 0:
      raise ValueError(f"SamplerConfig: max_new_tokens={self.max_new_tokens} and "
                       f"num_samples={self.num_samples} must be positive")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError(f"SamplerConfig: temperature={self.temperature} must be >= 0, "
                       f"top_p={self.top_p} in (0, 1], top_k={self.top_k} >= 0")


class Samples(NamedTuple):
  tokens_BNT: jax.Array  # Generated tokens, EOS included, 0 after it.
  lengths_BN: jax.Array  # Generated tokens per sample, EOS included.
  logprobs_BN: jax.Array


def pad_to_bucket(prompt_tokens: Sequence[Sequence[int]], buckets: Sequence[int],
                  max_total_length: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token lists to the smallest bucket that fits the longest; errors if none does."""
  longest = max(len(t) for t in prompt_tokens)
  if min(len(t) for t in prompt_tokens) == 0:
    raise ValueError("pad_to_bucket: an empty prompt (no tokens) cannot be sampled from")
  fitting = [b for b in sorted(buckets) if b >= longest]
  if not fitting or fitting[0] > max_total_length:
    raise ValueError(f"pad_to_bucket: a prompt of {longest} tokens does not fit the buckets "
                     f"{tuple(buckets)} within the context of {max_total_length} tokens")
  tokens_BP = np.full((len(prompt_tokens), fitting[0]), PAD_ID, np.int32)
  for row, tokens in enumerate(prompt_tokens):
    tokens_BP[row, :len(tokens)] = tokens
  return tokens_BP, np.array([len(t) for t in prompt_tokens], np.int32)


def _restrict(logits_XV, cfg: SamplerConfig):
  """Temperature, then top-k, then top-p (nucleus) on [rows, vocab] logits."""
  logits_XV = logits_XV / cfg.temperature
  if cfg.top_k:
    kth_X1 = jax.lax.top_k(logits_XV, cfg.top_k)[0][:, -1:]
    logits_XV = jnp.where(logits_XV < kth_X1, -jnp.inf, logits_XV)
  if cfg.top_p < 1.0:
    sorted_XV = jnp.sort(logits_XV, axis=-1)[:, ::-1]
    cumulative_XV = jnp.cumsum(jax.nn.softmax(sorted_XV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
    keep_count_X1 = jnp.sum(cumulative_XV - jax.nn.softmax(sorted_XV, axis=-1) < cfg.top_p,
                            axis=-1, keepdims=True)
    threshold_X1 = jnp.take_along_axis(sorted_XV, keep_count_X1 - 1, axis=-1)
    logits_XV = jnp.where(logits_XV < threshold_X1, -jnp.inf, logits_XV)
  return logits_XV


def _choose(logits_XV, rng, cfg: SamplerConfig):
  if cfg.temperature == 0.0:
    return jnp.argmax(logits_XV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, _restrict(logits_XV, cfg), axis=-1).astype(jnp.int32)


def _tile_cache(cache: Any, times: int, scanned: bool) -> Any:
  # A scanned decoder's cache carries a leading layers axis: [layers, batch, ...].
  return jax.tree_util.tree_map(lambda x: jnp.repeat(x, times, axis=1 if scanned else 0), cache)


def sample(config: DecoderConfig, params: Any, prompt_tokens_BP: jax.Array,
           prompt_lengths_B: jax.Array, rng: jax.Array, cfg: SamplerConfig) -> Samples:
  """Samples cfg.num_samples continuations of each prompt. Jit with config and cfg static."""
  batch, prompt_len = prompt_tokens_BP.shape
  cache_length = prompt_len + cfg.max_new_tokens
  if cache_length > config.max_seq_len:
    raise ValueError(f"sample: prompt bucket {prompt_len} + max_new_tokens "
                     f"{cfg.max_new_tokens} exceeds the model's max_seq_len {config.max_seq_len}")
  segments_BP = (jnp.arange(prompt_len)[None, :] < prompt_lengths_B[:, None]).astype(jnp.int32)
  positions_BP = jnp.broadcast_to(jnp.arange(prompt_len), (batch, prompt_len))
  prefill = Decoder(config, decode_mode="prefill", cache_length=cache_length)
  logits_BPV, variables = prefill.apply({"params": params}, prompt_tokens_BP, positions_BP,
                                        segments_BP, mutable=["cache"])
  last_logits_BV = jnp.take_along_axis(logits_BPV, (prompt_lengths_B - 1)[:, None, None],
                                       axis=1)[:, 0]

  rows = batch * cfg.num_samples
  cache = _tile_cache(variables["cache"], cfg.num_samples, config.scan_layers)
  logits_XV = jnp.repeat(last_logits_BV, cfg.num_samples, axis=0)
  start_X = jnp.repeat(prompt_lengths_B, cfg.num_samples)
  step_model = Decoder(config, decode_mode="step", cache_length=cache_length)

  def not_done(state):
    step, _, _, _, ended_X, _, _, _ = state
    return (step < cfg.max_new_tokens) & ~jnp.all(ended_X)

  def body(state):
    step, tokens_XT, logits_XV, cache, ended_X, lengths_X, logprob_X, rng = state
    rng, step_rng = jax.random.split(rng)
    token_X = jnp.where(ended_X, PAD_ID, _choose(logits_XV, step_rng, cfg))
    token_logprob_X = jnp.take_along_axis(jax.nn.log_softmax(logits_XV, axis=-1),
                                          token_X[:, None], axis=-1)[:, 0]
    logprob_X = logprob_X + jnp.where(ended_X, 0.0, token_logprob_X)
    tokens_XT = jax.lax.dynamic_update_slice(tokens_XT, token_X[:, None], (0, step))
    lengths_X = lengths_X + (~ended_X).astype(jnp.int32)
    ended_X = ended_X | (token_X == cfg.eos_id)
    logits_X1V, variables = step_model.apply(
        {"params": params, "cache": cache}, token_X[:, None], (start_X + step)[:, None],
        jnp.ones((rows, 1), jnp.int32), mutable=["cache"])
    return (step + 1, tokens_XT, logits_X1V[:, 0], variables["cache"], ended_X, lengths_X,
            logprob_X, rng)

  state = (jnp.int32(0), jnp.zeros((rows, cfg.max_new_tokens), jnp.int32), logits_XV, cache,
           jnp.zeros((rows,), jnp.bool_), jnp.zeros((rows,), jnp.int32),
           jnp.zeros((rows,), jnp.float32), rng)
  _, tokens_XT, _, _, _, lengths_X, logprob_X, _ = jax.lax.while_loop(not_done, body, state)
  tokens_BNT = tokens_XT.reshape(batch, cfg.num_samples, -1)
  lengths_BN = lengths_X.reshape(batch, cfg.num_samples)
  logprobs_BN = logprob_X.reshape(batch, cfg.num_samples)
  order_BN = jnp.argsort(-logprobs_BN, axis=-1, stable=True)
  return Samples(jnp.take_along_axis(tokens_BNT, order_BN[..., None], axis=1),
                 jnp.take_along_axis(lengths_BN, order_BN, axis=1),
                 jnp.take_along_axis(logprobs_BN, order_BN, axis=1))


def sharded_sampler(config: DecoderConfig, cfg: SamplerConfig, mesh: jax.sharding.Mesh):
  """`sample` jitted with params laid out by the logical-axis rules and prompts split over the
  batch axes; call it as fn(params, prompt_tokens_BP, prompt_lengths_B, rng) under
  `jax.set_mesh(mesh)`. The batch must divide data x fsdp."""
  from consensus_jax import partitioning
  from consensus_jax.models import params as params_lib

  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.jit(
      lambda params, tokens, lengths, rng: sample(config, params, tokens, lengths, rng, cfg),
      in_shardings=(params_lib.param_shardings(config, mesh),
                    partitioning.batch_sharding(mesh, 2), partitioning.batch_sharding(mesh, 1),
                    replicated))
