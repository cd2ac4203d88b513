"""Full train-step tokens/s and MFU of the `small` model: consensus_jax vs transformers (torch).

    python -m benchmarks.train_step [--batch 8 --seq 256 --rounds 3 --repeats 3]

One step on each side: forward, next-token cross-entropy over every position, backward,
global-norm gradient clipping at 1.0, AdamW (weight decay 0.01) update of float32 params.
consensus_jax runs its real trainer step (programs.train_step with the SFT objective, jitted
with in/out shardings and a donated state on a one-device mesh); torch runs LlamaForCausalLM of
the same shape with torch.optim.AdamW. MFU = models.flops.train_flops_per_token x tokens/s over
the float32 matmul peak measured in this script (benchmarks.common, the max of JAX and torch).
Rounds alternate between the two sides; torch runs in a child process with glibc's malloc
defaults (benchmarks.common.train_benchmark_main).
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from benchmarks import common  # noqa: E402
from consensus_jax import cpu_runtime  # noqa: E402
from consensus_jax import optimizers  # noqa: E402
from consensus_jax import partitioning  # noqa: E402
from consensus_jax import programs  # noqa: E402
from consensus_jax import train_step as train_step_lib  # noqa: E402
from consensus_jax.objectives.sft import SFTObjective  # noqa: E402

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
CLIP_NORM = 1.0


def _tokens(cfg, batch, seq) -> np.ndarray:
  return np.random.RandomState(1).randint(0, cfg.vocab_size, (batch, seq + 1)).astype(np.int32)


def jax_train_step(cfg, batch, seq):
  """The trainer's step on a one-device mesh, as a function that runs one step."""
  mesh = partitioning.make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
  objective = SFTObjective(cfg)
  schedule = optax.constant_schedule(LEARNING_RATE)
  optimizer = optimizers.make_optimizer(schedule, name="adamw", weight_decay=WEIGHT_DECAY,
                                        clip_grad_norm=CLIP_NORM)
  param_shardings = objective.param_shardings(mesh)
  params = objective.init_params(mesh, jax.random.key(0))
  replicated = NamedSharding(mesh, P())
  abstract_opt = jax.eval_shape(optimizer.init, objective.abstract_params())
  opt_shardings = partitioning.optimizer_state_shardings(optimizer, abstract_opt,
                                                         param_shardings, mesh)
  state_shardings = train_step_lib.TrainState(step=replicated, params=param_shardings,
                                       opt_state=opt_shardings)
  with jax.set_mesh(mesh):
    state = train_step_lib.TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), replicated), params=params,
        opt_state=jax.jit(optimizer.init, out_shardings=opt_shardings)(params))
  tokens = _tokens(cfg, batch, seq)
  host_batch = {
      "decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
      "decoder_loss_weights": np.ones((batch, seq), np.int32),
      "decoder_segment_ids": np.ones((batch, seq), np.int32),
      "decoder_positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy()}
  global_batch = partitioning.host_local_batch_to_global(host_batch, mesh)
  batch_shardings = {name: partitioning.batch_sharding(mesh, 2) for name in host_batch}
  step = programs.train_step(objective, optimizer, schedule, 1, 0, state_shardings,
                             batch_shardings, mesh)
  holder = {"state": state}

  def run():
    with jax.set_mesh(mesh):
      holder["state"], metrics = step(holder["state"], global_batch)
    float(metrics["loss"])  # the trainer reads the loss every step too

  return run


def torch_train_step(cfg, batch, seq, device="cpu"):
  """The same step in transformers + torch.optim.AdamW, as a function that runs one step."""
  import torch

  model = common.torch_llama(cfg).to(device).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95),
                                eps=1e-8, weight_decay=WEIGHT_DECAY)
  tokens = torch.from_numpy(_tokens(cfg, batch, seq).astype(np.int64)).to(device)

  def run():
    optimizer.zero_grad(set_to_none=True)
    logits = model(tokens[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size),
                                             tokens[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    optimizer.step()
    float(loss.detach())

  return run


def main():
  common.train_benchmark_main(__doc__, "benchmarks.train_step", "train step", jax_train_step,
                              torch_train_step)


if __name__ == "__main__":
  cpu_runtime.reexec_with_tuned_malloc()
  main()
