"""Quick qualitative checks of a trained SFT policy: greedy continuation of a prompt.

This recomputes the full forward pass for every new token (no KV cache): fine for a handful
of demo prompts, not for serving. The batched KV-cache sampler belongs in decoding.py.
Prompt ids come from data.prompts.policy_prompt_ids, the framing the policy was trained on.
"""
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder


@functools.partial(jax.jit, static_argnums=0)
def _next_token(config: DecoderConfig, params: Any, tokens_1L: jax.Array,
                last_index: jax.Array) -> jax.Array:
  # Causal attention: positions after last_index (zeros) cannot affect its logits.
  logits_1LV = Decoder(config).apply({"params": params}, tokens_1L)
  return jnp.argmax(logits_1LV[0, last_index])


def greedy_continue_ids(config: DecoderConfig, params: Any, prompt_ids: Sequence[int],
                        eos_id: int, max_new_tokens: int = 64,
                        buffer_length: int = 512) -> list[int]:
  """The argmax continuation's ids after `prompt_ids` (start token included).

  Stops before EOS or after max_new_tokens; one fixed buffer length, so one compilation.
  """
  if len(prompt_ids) + max_new_tokens > buffer_length:
    raise ValueError(f"greedy_continue: prompt of {len(prompt_ids)} tokens + {max_new_tokens} "
                     f"new tokens does not fit buffer_length={buffer_length}")
  tokens_1L = np.zeros((1, buffer_length), np.int32)
  length = len(prompt_ids)
  tokens_1L[0, :length] = prompt_ids
  new_ids = []
  for _ in range(max_new_tokens):
    next_id = int(_next_token(config, params, jnp.asarray(tokens_1L), length - 1))
    if next_id == eos_id:
      break
    new_ids.append(next_id)
    tokens_1L[0, length] = next_id
    length += 1
  return new_ids
