"""Every device program the binaries run, built in one place on a mesh.

Each builder returns a `Program`: the function jitted with in/out shardings from the one rule
table (`partitioning`) and the compiler options of the mesh's platform, traced and run under
`jax.set_mesh(mesh)` so that the models' activation constraints apply. Call it on arrays
(train, eval, infer, the studies) or `.lower()` it on `jax.ShapeDtypeStruct`s (precompile: a
TPU topology's program compiled on a CPU host, nothing allocated).

| builder | program | used by |
|---|---|---|
| `train_step` | one optimizer update (train_step.make_train_step) | trainer, precompile |
| `eval_step` | the objective's loss sums on a batch | trainer |
| `to_serving_layout` | checkpoint layout -> the layout the sampler decodes in | serving |
| `sampler` | prefill + decode loop (decoding.sample) | serving, sample collection |
| `rm_scorer` | utilities of every (candidate, member) pair (reward.score_groups) | eval, studies |
| `consensus_program` | sample -> score -> welfare -> select (consensus.run) | infer, studies |

Batch-like inputs (prompts, member prefixes, candidates) are split over (data, fsdp): their
leading dimension must be a multiple of `batch_multiple(mesh)`; `pad_batch` pads host arrays.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from consensus_jax import consensus as consensus_lib
from consensus_jax import decoding, partitioning
from consensus_jax import train_step as train_step_lib
from consensus_jax.models import param_layout, reward
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig
from consensus_jax.objectives.base import Objective


def compiler_options(platform: Optional[str] = None) -> dict:
  """XLA options for a platform (default: JAX's default backend). On CPU: XLA's own (Eigen)
  dots rather than its XNNPACK/YNNPACK fusions, which run the attention's batched matmuls up to
  1.7x faster and the few-row matmuls of a decode step faster too (26 against 36 ms a step; a
  `small` train step at 8 x 256 gains 4-7%). None elsewhere: a TPU program compiled on a CPU
  host gets none."""
  if (platform or jax.default_backend()) != "cpu":
    return {}
  return {"xla_cpu_experimental_ynn_fusion_type": "",
          "xla_cpu_experimental_xnn_fusion_type": ""}


@dataclasses.dataclass(frozen=True)
class Program:
  """A jitted function and the mesh it runs on (entered for tracing, lowering and calls)."""
  jitted: Any
  mesh: Mesh

  def __call__(self, *args):
    with jax.set_mesh(self.mesh):
      return self.jitted(*args)

  def lower(self, *args):
    with jax.set_mesh(self.mesh):
      return self.jitted.lower(*args)

  def run_on_host_batch(self, before: tuple, batch: tuple, after: tuple = ()) -> Any:
    """program(*before, *batch, *after) for host arrays `batch` of any row count: the rows are
    padded to the batch shards (copies of the first row), the outputs fetched to the host and
    cut back to the real rows."""
    rows = len(batch[0])
    multiple = batch_multiple(self.mesh)
    out = jax.device_get(self(*before, *(pad_batch(x, multiple) for x in batch), *after))
    return jax.tree_util.tree_map(lambda x: x[:rows], out)


def _program(fn: Callable, mesh: Mesh, in_shardings, out_shardings,
             donate_argnums=()) -> Program:
  return Program(jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                         donate_argnums=donate_argnums,
                         compiler_options=compiler_options(mesh.devices.flat[0].platform)), mesh)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_multiple(mesh: Mesh) -> int:
  """Batch-like leading dimensions must be a multiple of this (the data x fsdp shards)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def pad_batch(array: np.ndarray, multiple: int, fill=None) -> np.ndarray:
  """Host array padded along its first axis to a multiple of `multiple`: rows of `fill`, or
  copies of the first row when `fill` is None (a valid input wherever an all-zero row, such as
  an empty prompt, would not be)."""
  array = np.asarray(array)
  extra = -array.shape[0] % multiple
  if not extra:
    return array
  rows = (np.repeat(array[:1], extra, axis=0) if fill is None
          else np.full((extra, *array.shape[1:]), fill, array.dtype))
  return np.concatenate([array, rows])


def _batch(mesh: Mesh, ndim: int) -> NamedSharding:
  return partitioning.batch_sharding(mesh, ndim)


# Training.

def train_step(objective: Objective, optimizer: optax.GradientTransformation,
               schedule: optax.Schedule, num_micro_batches: int, seed: int,
               state_shardings: train_step_lib.TrainState, batch_shardings: Any,
               mesh: Mesh) -> Program:
  """(state, global batch) -> (new state, replicated scalar metrics); the state is donated."""
  step = train_step_lib.make_train_step(objective, optimizer, schedule, num_micro_batches, seed,
                                        state_shardings.params)
  return _program(step, mesh, (state_shardings, batch_shardings),
                  (state_shardings, replicated(mesh)), donate_argnums=0)


def eval_step(objective: Objective, seed: int, param_shardings: Any, batch_shardings: Any,
              mesh: Mesh) -> Program:
  """(params, global batch) -> the objective's loss and metric sums, replicated."""
  return _program(lambda params, batch: objective.loss(params, batch, jax.random.key(seed)),
                  mesh, (param_shardings, batch_shardings), replicated(mesh))


# Serving.

def serving_config(config: DecoderConfig, sampler_cfg: decoding.SamplerConfig) -> DecoderConfig:
  """The policy config the sampler decodes in (param_layout.decode_layout unless the sampler
  config turns it off)."""
  if not sampler_cfg.decode_layout:
    return config
  serving = config.replace(scan_layers=False) if config.scan_layers else config
  return serving.replace(fused_projections=True)


def policy_shardings(config: DecoderConfig, mesh: Mesh) -> Any:
  return params_lib.param_shardings(config, mesh)


def reward_shardings(config: DecoderConfig, mesh: Mesh) -> Any:
  return params_lib.param_shardings(config, mesh, reward.RewardModel)


def to_serving_layout(config: DecoderConfig, sampler_cfg: decoding.SamplerConfig,
                      mesh: Mesh) -> tuple[DecoderConfig, Optional[Program]]:
  """(serving config, program converting checkpoint-layout params into it on the mesh, or None
  when the layouts are the same). Run once, at load: the sampler then reads the result."""
  target = serving_config(config, sampler_cfg)
  if target == config:
    return config, None

  def convert(params):
    converted_config, converted = param_layout.decode_layout(config, params)
    assert converted_config == target, (converted_config, target)
    return converted
  return target, _program(convert, mesh, (policy_shardings(config, mesh),),
                          policy_shardings(target, mesh))


def _samples_shardings(mesh: Mesh) -> decoding.Samples:
  return decoding.Samples(_batch(mesh, 3), _batch(mesh, 2), _batch(mesh, 2))


def sampler(config: DecoderConfig, cfg: decoding.SamplerConfig, mesh: Mesh) -> Program:
  """fn(params, prompt_tokens_BP, prompt_lengths_B, rng) -> decoding.Samples. `config` and the
  params are in the serving layout (`to_serving_layout`), so no call converts them."""
  return _program(functools.partial(decoding.sample, config, cfg=cfg), mesh,
                  (policy_shardings(config, mesh), _batch(mesh, 2), _batch(mesh, 1),
                   replicated(mesh)), _samples_shardings(mesh))


def rm_scorer(config: DecoderConfig, mesh: Mesh, chunk_size: Optional[int] = None) -> Program:
  """fn(params, prefix_tokens_BMQ, prefix_lengths_BM, candidate_tokens_BNC,
  candidate_lengths_BN) -> utilities_BNM."""
  return _program(functools.partial(reward.score_groups, config, chunk_size=chunk_size), mesh,
                  (reward_shardings(config, mesh), _batch(mesh, 3), _batch(mesh, 2),
                   _batch(mesh, 3), _batch(mesh, 2)), _batch(mesh, 3))


def consensus_program(policy_config: DecoderConfig, rm_config: DecoderConfig,
              cfg: consensus_lib.ConsensusConfig, mesh: Mesh) -> Program:
  """fn(policy_params, rm_params, prompt_tokens_BP, prompt_lengths_B, member_prefixes_BMQ,
  member_prefix_lengths_BM, member_mask_BM, rng) -> consensus.ConsensusOutput; the policy in
  the serving layout."""
  out = consensus_lib.ConsensusOutput(
      winner_B=_batch(mesh, 1), candidate_tokens_BNT=_batch(mesh, 3),
      candidate_lengths_BN=_batch(mesh, 2), candidate_logprobs_BN=_batch(mesh, 2),
      candidate_valid_BN=_batch(mesh, 2), utilities_BNM=_batch(mesh, 3),
      welfare_BN=_batch(mesh, 2))
  return _program(functools.partial(consensus_lib.run, policy_config, rm_config, cfg), mesh,
                  (policy_shardings(policy_config, mesh), reward_shardings(rm_config, mesh),
                   _batch(mesh, 2), _batch(mesh, 1), _batch(mesh, 3), _batch(mesh, 2),
                   _batch(mesh, 2), replicated(mesh)), out)
