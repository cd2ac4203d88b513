"""Batched temperature sampling with a KV cache, compiled into `lax.while_loop`s.

Prompts arrive right-padded with per-row lengths. On device they are left-aligned, so all rows
write the same cache slot at each step, and prefilled once into a prompt cache that the
num_samples samples of each prompt share (models.layers.Attention). The first-token logits
are repeated to batch x num_samples rows, and each loop step samples one token per row, writes
it, and feeds it back at that row's own position. The per-sample cache comes in chunks of
`cache_chunk` slots with one loop per chunk, so a step reads only the chunks written so far. A
row that emits EOS stops (later slots hold 0); sampling ends when every row has stopped or
`max_new_tokens` is reached. Temperature 0 is greedy; top-k and top-p restrict the
distribution before sampling.

Returned log-probabilities are under the model's own distribution (temperature 1, no top-k/p),
summed over the generated tokens including EOS; the samples of each prompt come sorted by it,
best first. Prompt lengths are padded up to `prompt_buckets` on the host (`pad_to_bucket`) so
different prompt lengths reuse one compiled program. `programs.sampler` compiles `sample` on a
mesh, with the params already in the layout it decodes in (converted once, at load).
"""
import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax.models import layers, param_layout
from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder
from consensus_jax.models.layers import DecodeSpec

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
  # Sample-cache slots per chunk (models.layers.DecodeSpec): each chunk gets its own loop,
  # whose steps read only the chunks written so far. 0: one chunk, one loop.
  cache_chunk: int = 32
  # Decode in param_layout.decode_layout (unrolled, fused kernels): faster steps. Serving
  # converts once at load (programs.to_serving_layout); `sample` called directly with a
  # checkpoint-layout config converts inside. False decodes in the given layout.
  decode_layout: bool = True

  def __post_init__(self):
    if self.max_new_tokens <= 0 or self.num_samples <= 0:
      raise ValueError(f"SamplerConfig: max_new_tokens={self.max_new_tokens} and "
                       f"num_samples={self.num_samples} must be positive")
    if self.cache_chunk < 0:
      raise ValueError(f"SamplerConfig: cache_chunk={self.cache_chunk} must be >= 0")
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
  # Inverse-CDF sampling: one uniform per row. A Gumbel draw per vocabulary entry
  # (jax.random.categorical) costs more random bits than the rest of the choice on CPU.
  rows, vocab = logits_XV.shape
  probs_XV = jax.nn.softmax(_restrict(logits_XV, cfg), axis=-1)
  cdf_XV = jnp.cumsum(probs_XV, axis=-1)
  u_X1 = jax.random.uniform(rng, (rows, 1)) * cdf_XV[:, -1:]
  # Token j is drawn when cdf[j-1] <= u < cdf[j]: an interval of width p_j, empty for p_j = 0.
  token_X = jnp.sum(cdf_XV <= u_X1, axis=-1)
  # Rounding may put u at the total: fall back to the last token with mass.
  last_with_mass_X = vocab - 1 - jnp.argmax(probs_XV[:, ::-1] > 0, axis=-1)
  return jnp.minimum(token_X, last_with_mass_X).astype(jnp.int32)


def prefill(config: DecoderConfig, params: Any, prompt_tokens_BP: jax.Array,
            prompt_lengths_B: jax.Array, cfg: SamplerConfig):
  """Runs the prompts into the prompt cache: (first-token logits_BV, cache variables).

  The logits are those the first new token is sampled from (before temperature, top-k/p).
  `config` and `params` must already be in the layout the sampler decodes in.
  """
  tokens_BP, positions_BP, segments_BP = layers.left_align(prompt_tokens_BP, prompt_lengths_B)
  spec = DecodeSpec("prefill", cfg.max_new_tokens, cfg.num_samples, cfg.cache_chunk)
  logits_BPV, variables = Decoder(config, spec).apply(
      {"params": params}, tokens_BP, positions_BP, segments_BP, mutable=["cache"])
  return logits_BPV[:, -1], variables


def sample(config: DecoderConfig, params: Any, prompt_tokens_BP: jax.Array,
           prompt_lengths_B: jax.Array, rng: jax.Array, cfg: SamplerConfig) -> Samples:
  """Samples cfg.num_samples continuations of each prompt. Jit with config and cfg static."""
  batch, prompt_len = prompt_tokens_BP.shape
  if prompt_len + cfg.max_new_tokens > config.max_seq_len:
    raise ValueError(f"sample: prompt bucket {prompt_len} + max_new_tokens "
                     f"{cfg.max_new_tokens} exceeds the model's max_seq_len {config.max_seq_len}")
  if cfg.decode_layout:
    config, params = param_layout.decode_layout(config, params)
  first_logits_BV, variables = prefill(config, params, prompt_tokens_BP, prompt_lengths_B, cfg)
  spec = DecodeSpec("prefill", cfg.max_new_tokens, cfg.num_samples, cfg.cache_chunk)

  rows = batch * cfg.num_samples
  start_X = jnp.repeat(prompt_lengths_B, cfg.num_samples)

  def body(step_model, state):
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

  state = (jnp.int32(0), jnp.zeros((rows, cfg.max_new_tokens), jnp.int32),
           jnp.repeat(first_logits_BV, cfg.num_samples, axis=0), variables["cache"],
           jnp.zeros((rows,), jnp.bool_), jnp.zeros((rows,), jnp.int32),
           jnp.zeros((rows,), jnp.float32), rng)
  # One loop per sample-cache chunk: a step attends only to the chunks written so far.
  for chunk in range(spec.num_chunks):
    first, size = spec.chunk_slots(chunk)
    step_model = Decoder(config, dataclasses.replace(spec, mode="step", chunk=chunk))
    state = jax.lax.while_loop(
        lambda state, end=first + size: (state[0] < end) & ~jnp.all(state[4]),
        functools.partial(body, step_model), state)
  _, tokens_XT, _, _, _, lengths_X, logprob_X, _ = state
  tokens_BNT = tokens_XT.reshape(batch, cfg.num_samples, -1)
  lengths_BN = lengths_X.reshape(batch, cfg.num_samples)
  logprobs_BN = logprob_X.reshape(batch, cfg.num_samples)
  order_BN = jnp.argsort(-logprobs_BN, axis=-1, stable=True)
  return Samples(jnp.take_along_axis(tokens_BNT, order_BN[..., None], axis=1),
                 jnp.take_along_axis(lengths_BN, order_BN, axis=1),
                 jnp.take_along_axis(logprobs_BN, order_BN, axis=1))
