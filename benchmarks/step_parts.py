"""Where a decoder train step's time goes beyond its layers' weight matmuls, part by part,
against torch.

    python -m benchmarks.step_parts [--gin_file gin_configs/models/small.gin --batch 8 --seq 256]

Three parts of the step, each at the step's shapes, each forward and backward where it has one,
each ours against what transformers + torch run for it:
- attention: one layer's softmax attention from the projected q, k, v ([B, L, heads, D], as the
  projections give them) to its output in the same layout. Ours: layers.Attention._attend (the
  heads-major transposes, the causal query blocks the model gin sets); torch: the transposes
  transformers' Llama makes around scaled_dot_product_attention(is_causal=True).
- loss head: from the final hidden states [B, L, d_model] to the cross-entropy summed over every
  token, with its gradients for the hidden states and the output kernel, the output projection's
  three matmuls included on both sides. Ours: the logits and optax's cross-entropy with the
  accuracy count, as SFTObjective.loss runs them by default; torch: the lm_head's
  functional.linear and functional.cross_entropy over its logits, as transformers' Llama. The
  same rounds time our fused head too (SFTObjective.loss_chunk > 0, loss_head), and a line
  gives it against the default.
- optimizer: global-norm clipping at 1.0, then AdamW over every parameter of the model. Ours:
  optimizers.make_optimizer, jitted with the state donated as the trainer's step donates it;
  torch: clip_grad_norm_ and torch.optim.AdamW, as benchmarks.train_step's peer.
  (torch decays the norm scales too, which ours skips: the same memory traffic either way.)
Each pair is timed in the same alternating rounds (benchmarks/timing), both in this process (with
cpu_runtime's malloc settings). The last lines add the parts up per step (attention once per
layer) beside the difference of the two whole steps that benchmarks.train_step measures.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import timing  # noqa: E402
from consensus_jax import cpu_runtime  # noqa: E402
from consensus_jax import optimizers  # noqa: E402
from consensus_jax import programs  # noqa: E402
from consensus_jax.models import layers  # noqa: E402
from consensus_jax.models import params as params_lib  # noqa: E402
from consensus_jax.objectives import loss_head  # noqa: E402

LEARNING_RATE, WEIGHT_DECAY, CLIP_NORM = 1e-4, 0.01, 1.0


def _jit(fn, **kwargs):
  return jax.jit(fn, compiler_options=programs.compiler_options(), **kwargs)


def attention_inputs(config, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Projected q [B, L, H, D] (not yet scaled), k, v [B, L, K, D] and the output's cotangent."""
  rng = np.random.RandomState(seed)
  heads, kv_heads, head_dim = config.num_heads, config.num_kv_heads, config.resolved_head_dim
  return {"q_BLHD": rng.randn(batch, seq, heads, head_dim).astype(np.float32),
          "k_BLKD": rng.randn(batch, seq, kv_heads, head_dim).astype(np.float32),
          "v_BLKD": rng.randn(batch, seq, kv_heads, head_dim).astype(np.float32),
          "d_out_BLHD": rng.randn(batch, seq, heads, head_dim).astype(np.float32)}


def attention_ours(config, inputs):
  """Returns run() -> (out, dq, dk, dv) of the model's attention, one layer."""
  batch, seq = inputs["q_BLHD"].shape[:2]
  attention = layers.Attention(config)
  mask_B11LS = layers.attention_mask(jnp.ones((batch, seq), jnp.int32))

  def forward(q_BLHD, k_BLKD, v_BLKD):
    return attention.apply({}, q_BLHD, k_BLKD.transpose(0, 2, 1, 3), v_BLKD.transpose(0, 2, 1, 3),
                           mask_B11LS, method="_attend")

  def forward_backward(q_BLHD, k_BLKD, v_BLKD, d_out_BLHD):
    out_BLHD, vjp = jax.vjp(forward, q_BLHD, k_BLKD, v_BLKD)
    return (out_BLHD, *vjp(d_out_BLHD))

  step = _jit(forward_backward)
  args = [jnp.asarray(inputs[name]) for name in ("q_BLHD", "k_BLKD", "v_BLKD", "d_out_BLHD")]
  return lambda: jax.block_until_ready(step(*args))


def attention_torch(config, inputs):
  """The same in transformers' layout: [B, H, L, D] views around SDPA, causal, GQA expanded."""
  import torch

  groups = config.num_heads // config.num_kv_heads
  q, k, v = (torch.from_numpy(inputs[name].copy()).requires_grad_()
             for name in ("q_BLHD", "k_BLKD", "v_BLKD"))
  d_out = torch.from_numpy(inputs["d_out_BLHD"].copy())

  def run():
    q.grad = k.grad = v.grad = None
    key = k.transpose(1, 2).repeat_interleave(groups, dim=1)
    value = v.transpose(1, 2).repeat_interleave(groups, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), key, value,
                                                           is_causal=True).transpose(1, 2)
    out.backward(d_out)
    return out.detach(), q.grad, k.grad, v.grad

  return run


def head_inputs(config, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
  """The final hidden states, the output kernel and the targets of one step."""
  rng = np.random.RandomState(seed)
  return {"hidden_BLE": rng.randn(batch, seq, config.d_model).astype(np.float32),
          "unembed_EV": (rng.randn(config.d_model, config.vocab_size)
                         * config.d_model ** -0.5).astype(np.float32),
          "targets_BL": rng.randint(0, config.vocab_size, (batch, seq)).astype(np.int32)}


def loss_head_ours(inputs, loss_chunk: int = 0):
  """Returns run() -> (loss sum, hits, d hidden, d kernel) of SFTObjective.loss's head, every
  token weighted 1, at its `loss_chunk`: 0 (the default), the logits path as the Decoder and
  SFTObjective run it (the projection's [B, L, vocab] logits by layers.dense, optax's
  cross-entropy, autodiff); N > 0, the fused head at N positions a chunk."""
  def loss(hidden_BLE, unembed_EV, targets_BL):
    weights_BL = jnp.ones(targets_BL.shape, jnp.float32)
    if loss_chunk:
      return loss_head.cross_entropy_sums(hidden_BLE, unembed_EV, targets_BL, weights_BL, 0.0,
                                          loss_chunk)
    logits_BLV = layers.dense(hidden_BLE, unembed_EV, preferred_element_type=jnp.float32)
    return loss_head.logits_sums(logits_BLV, targets_BL, weights_BL, 0.0)

  step = _jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  args = [jnp.asarray(inputs[name]) for name in ("hidden_BLE", "unembed_EV", "targets_BL")]

  def run():
    (loss_sum, hits), (d_hidden, d_unembed) = jax.block_until_ready(step(*args))
    return loss_sum, hits, d_hidden, d_unembed

  return run


def loss_head_torch(inputs):
  """transformers' head: the lm_head projection, then cross-entropy over its logits."""
  import torch

  hidden = torch.from_numpy(inputs["hidden_BLE"].copy()).requires_grad_()
  unembed = torch.nn.Parameter(torch.from_numpy(inputs["unembed_EV"].T.copy()))
  targets = torch.from_numpy(inputs["targets_BL"].astype(np.int64)).reshape(-1)

  def run():
    hidden.grad = unembed.grad = None
    logits = torch.nn.functional.linear(hidden, unembed)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets,
                                             reduction="sum")
    loss.backward()
    return loss.detach(), hidden.grad, unembed.grad.T

  return run


def optimizer_inputs(config, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
  """(path, param, gradient) of every parameter of the model, random."""
  rng = np.random.RandomState(seed)
  shapes = jax.tree_util.tree_flatten_with_path(params_lib.abstract_params(config))[0]
  return [(jax.tree_util.keystr(path), (0.02 * rng.randn(*leaf.shape)).astype(np.float32),
           (0.01 * rng.randn(*leaf.shape)).astype(np.float32)) for path, leaf in shapes]


def optimizer_ours(config, inputs):
  """Returns run() -> the updated params (a flat list), one clipped AdamW step per call."""
  optimizer = optimizers.make_optimizer(optax.constant_schedule(LEARNING_RATE), name="adamw",
                                        weight_decay=WEIGHT_DECAY, clip_grad_norm=CLIP_NORM)
  treedef = jax.tree_util.tree_structure(params_lib.abstract_params(config))
  params = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(p) for _, p, _ in inputs])
  grads = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(g) for _, _, g in inputs])

  def update(params, opt_state, grads):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  step = _jit(update, donate_argnums=(0, 1))
  holder = {"params": params, "opt_state": jax.jit(optimizer.init)(params)}

  def run():
    holder["params"], holder["opt_state"] = step(holder["params"], holder["opt_state"], grads)
    return jax.tree_util.tree_leaves(jax.block_until_ready(holder["params"]))

  return run


def optimizer_torch(inputs):
  import torch

  params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for _, p, _ in inputs]
  for param, (_, _, grad) in zip(params, inputs):
    param.grad = torch.from_numpy(grad.copy())
  optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=WEIGHT_DECAY)

  def run():
    torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
    optimizer.step()
    return [p.detach() for p in params]

  return run


FUSED = "loss head ours, fused"  # SFTObjective.loss_chunk > 0, timed beside the default.


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gin_file", default="gin_configs/models/small.gin")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3, help="Timed runs per side per round.")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  args = parser.parse_args()
  import torch

  torch.set_num_threads(args.threads)
  config = common.model_config(args.gin_file)
  load_before = common.machine_load()
  attention = attention_inputs(config, args.batch, args.seq)
  head = head_inputs(config, args.batch, args.seq)
  optimizer = optimizer_inputs(config)
  parts = {"attention": (attention_ours(config, attention), attention_torch(config, attention)),
           "loss head": (loss_head_ours(head), loss_head_torch(head)),
           "optimizer": (optimizer_ours(config, optimizer), optimizer_torch(optimizer))}
  per_step = {"attention": config.num_layers, "loss head": 1, "optimizer": 1}
  sides = {f"{part} {side}": fn for part, pair in parts.items()
           for side, fn in zip(("ours", "torch"), pair)}
  sides[FUSED] = loss_head_ours(head, loss_chunk=loss_head.DEFAULT_CHUNK)
  result = timing.compare(sides, rounds=args.rounds, repeats=args.repeats)
  print(f"model {args.gin_file}, batch {args.batch} x seq {args.seq} "
        f"(attention query block {config.attention_query_block}); {args.rounds} alternating "
        f"rounds of {args.repeats} timed runs each; before: {load_before}; after: "
        f"{common.machine_load()}; {common.allocator()}")
  for part in parts:
    names = (f"{part} ours", f"{part} torch")
    for line in timing.report({name: result[name] for name in names}, 1.0, "calls/s",
                              names):
      print(line)
  fused_lines = timing.report({FUSED: result[FUSED], "loss head ours": result["loss head ours"]},
                              1.0, "calls/s", (FUSED, "loss head ours"))
  print("\n".join([fused_lines[0], fused_lines[-1]]))  # The default's line is printed above.
  ours = sum(result[f"{part} ours"].median * count for part, count in per_step.items())
  peer = sum(result[f"{part} torch"].median * count for part, count in per_step.items())
  print("per step (medians; attention x " + f"{config.num_layers} layers): " + ", ".join(
      f"{part} {result[f'{part} ours'].median * count * 1e3:.0f} against "
      f"{result[f'{part} torch'].median * count * 1e3:.0f} ms"
      for part, count in per_step.items()))
  print(f"these parts: ours {ours * 1e3:.0f} ms a step, torch {peer * 1e3:.0f} ms "
        f"({(ours - peer) * 1e3:+.0f} ms)")


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
