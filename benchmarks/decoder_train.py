"""Forward+backward tokens/s of the `small` decoder vs transformers (torch, CPU), and MFU.

    python -m benchmarks.decoder_train [--batch 8 --seq 256 --repeats 5]

Both sides compute the same thing: logits of the same Llama shape, mean next-token cross-entropy,
and gradients of every parameter. MFU counts consensus_jax.models.flops.train_flops_per_token
(6 x matmul params + 12 x layers x d_model x seq per token, forward+backward), against the
float32 matmul peak measured here.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from consensus_jax import cpu_runtime
from consensus_jax.models import decoder, params as params_lib
from consensus_jax.models.flops import train_flops_per_token


def jax_step(cfg, batch, seq, repeats):
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
                    compiler_options=cpu_runtime.compiler_options())
  run = lambda: jax.block_until_ready(grad_fn(params, tokens))
  return common.median_seconds(run, repeats)


def torch_step(cfg, batch, seq, repeats):
  import torch

  model = common.torch_llama(cfg).train()
  tokens = torch.from_numpy(np.random.RandomState(1).randint(0, cfg.vocab_size, (batch, seq + 1)))

  def run():
    model.zero_grad(set_to_none=True)
    logits = model(tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                             tokens[:, 1:].reshape(-1))
    loss.backward()

  return common.median_seconds(run, repeats)


def main():
  args, cfg, tokens, load_before, peak = common.train_benchmark_setup(
      __doc__.splitlines()[0])
  peak_gflops = max(peak.values())
  flops = train_flops_per_token(cfg, args.seq) * tokens

  jax_s, jax_all = jax_step(cfg, args.batch, args.seq, args.repeats)
  torch_s, torch_all = torch_step(cfg, args.batch, args.seq, args.repeats)
  print(f"model {args.gin_file}: {params_lib.count_params(cfg) / 1e6:.1f}M params, "
        f"batch {args.batch} x seq {args.seq}, {args.repeats} timed runs each; before: "
        f"{load_before}; after: {common.machine_load()}")
  print(f"{common.allocator()}; f32 matmul peak: jax {peak['jax']:.0f} GFLOP/s, torch {peak['torch']:.0f} GFLOP/s")
  common.print_train_rows("fwd+bwd", [("consensus_jax", jax_s, jax_all),
                                      ("torch", torch_s, torch_all)], tokens, flops, peak_gflops)

if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
