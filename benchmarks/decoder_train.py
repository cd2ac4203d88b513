"""Forward+backward tokens/s of the `small` decoder vs transformers (torch, CPU), and MFU.

    python -m benchmarks.decoder_train [--batch 8 --seq 256 --rounds 3 --repeats 3]

Both sides compute the same thing: logits of the same Llama shape, mean next-token cross-entropy,
and gradients of every parameter. MFU counts consensus_jax.models.flops.train_flops_per_token
(6 x matmul params + 12 x layers x d_model x seq per token, forward+backward), against the
float32 matmul peak measured here. Rounds alternate between the two sides; torch runs in a child
process with glibc's malloc defaults (benchmarks.common.train_benchmark_main).
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from consensus_jax import cpu_runtime
from consensus_jax import programs
from consensus_jax.models import decoder


def jax_step(cfg, batch, seq):
  """One jitted forward+backward of consensus_jax's decoder, as a function that runs it."""
  model = decoder.Decoder(cfg)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 8), jnp.int32))["params"])(
      jax.random.key(0))
  params = jax.tree_util.tree_map(lambda x: x.value if hasattr(x, "value") else x, params,
                                  is_leaf=lambda x: hasattr(x, "value"))
  tokens = jnp.asarray(np.random.RandomState(1).randint(0, cfg.vocab_size, (batch, seq + 1)))

  def loss_fn(p, tokens_BL1):
    logits = model.apply({"params": p}, tokens_BL1[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BL1[:, 1:]).mean()

  grad_fn = jax.jit(jax.value_and_grad(loss_fn),
                    compiler_options=programs.compiler_options())
  return lambda: jax.block_until_ready(grad_fn(params, tokens))


def torch_step(cfg, batch, seq):
  """The same forward+backward in transformers' LlamaForCausalLM, as a function that runs it."""
  import torch

  model = common.torch_llama(cfg).train()
  tokens = torch.from_numpy(np.random.RandomState(1).randint(0, cfg.vocab_size, (batch, seq + 1)))

  def run():
    model.zero_grad(set_to_none=True)
    logits = model(tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                             tokens[:, 1:].reshape(-1))
    loss.backward()

  return run


def main():
  common.train_benchmark_main(__doc__, "benchmarks.decoder_train", "fwd+bwd", jax_step,
                              torch_step)


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
