"""Compiles the real programs for a TPU topology on this host and says whether they fit.

The precompile binary's job. The run gin says what is compiled, from the same bindings its own
binary would use:
- a training gin (runs/sft.gin, runs/reward*.gin: `train.*` bound): the train step of its
  objective, optimizer, global batch and feature lengths (programs.train_step);
- runs/infer.gin (`infer.*` bound): the sampler (prefill and the decode loop, one program) and
  the consensus program (sample -> score -> welfare -> select), policy in its serving layout.
The mesh gin (gin_configs/mesh/*.gin) names the topology, its chips' HBM and the mesh axes.
Devices come from libtpu's topology description (`jax.experimental.topologies`, the `tpu`
extra), inputs are `jax.ShapeDtypeStruct`s with their shardings: nothing is allocated.

Per program it reports XLA's per-chip memory (arguments, outputs, aliased, temporaries, host
offload), total = arguments + outputs - aliased + temporaries (MaxText's figure) against the
HBM, model FLOPs per step computed from the shapes (models/flops.py: XLA's cost analysis counts
a scanned layer loop's body once), and the MFU a given step time would imply. The last line is
`<name>: <total> GiB of <hbm> GiB per chip, fits|does not fit, per-device batch <B>,
sequence <L>, <F> model TFLOP per step`; a program that does not fit raises DoesNotFitError.
"""
import dataclasses
import math
import os
import re
from typing import Any, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from consensus_jax import checkpointing, consensus, gin_utils, optimizers
from consensus_jax import partitioning, programs
from consensus_jax import train_step as train_step_lib
from consensus_jax.models import flops, reward
from consensus_jax.models import params as params_lib

GIB = 2 ** 30


class DoesNotFitError(RuntimeError):
  """A compiled program needs more memory per chip than the topology's HBM."""


@dataclasses.dataclass(frozen=True)
class ProgramReport:
  name: str
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  host_bytes: int  # host offload: host arguments + outputs + temporaries
  hbm_bytes: int
  model_flops: float  # per step, all chips
  per_device_batch: float
  sequence: int

  @property
  def total_bytes(self) -> int:
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.hbm_bytes

  def table(self) -> str:
    rows = [("arguments", self.argument_bytes), ("outputs", self.output_bytes),
            ("aliased (outputs in argument buffers)", -self.alias_bytes),
            ("temporaries", self.temp_bytes), ("total", self.total_bytes),
            ("host offload", self.host_bytes), ("HBM per chip", self.hbm_bytes)]
    return "\n".join(f"  {label:<40}{value / GIB:10.2f} GiB" for label, value in rows)


def topology_devices(topology: str, chip_config_name: str = "default",
                     chips_per_host_bounds: Optional[Sequence[int]] = None,
                     num_slices: int = 1) -> list:
  """The devices of a TPU topology ('v5p:4x4x4'), built by libtpu on any host."""
  try:
    from jax.experimental import topologies
  except ImportError as error:  # pragma: no cover - jax always has it
    raise RuntimeError("jax.experimental.topologies is missing") from error
  import importlib.util
  if importlib.util.find_spec("libtpu") is None:
    raise gin_utils.BindingError(
        "precompile needs libtpu to compile TPU programs: pip install -e '.[tpu]' (the setup "
        "script installs it)")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # quiets a CPU host's warning
  kwargs = {"chip_config_name": chip_config_name, "num_slices": num_slices}
  if chips_per_host_bounds:
    kwargs["chips_per_host_bounds"] = tuple(chips_per_host_bounds)
  try:
    description = topologies.get_topology_desc(topology_name=topology, platform="tpu",
                                                **kwargs)
  except Exception as error:  # pylint: disable=broad-except
    raise gin_utils.BindingError(f"precompile.topology: libtpu does not know {topology!r} "
                                 f"({str(error).splitlines()[0]}); names look like "
                                 "'v5p:4x4x4', 'v4:4x4x4', 'v5e:16x16'") from error
  return list(description.devices)


def _int_input(shape, sharding, dtype=jnp.int32) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), dtype, sharding=sharding)


_TEMPORARIES_OVER_HBM = re.compile(r"memory required for HLO temporaries \(([\d.]+)([KMGT])\)")


def _argument_bytes_per_chip(args: Any) -> int:
  """The largest per-chip share of abstract arguments, from their shardings."""
  per_device: dict[Any, int] = {}
  for arg in jax.tree_util.tree_leaves(args):
    shard_bytes = math.prod(arg.sharding.shard_shape(arg.shape)) * arg.dtype.itemsize
    for device in arg.sharding.device_set:
      per_device[device] = per_device.get(device, 0) + shard_bytes
  return max(per_device.values(), default=0)


def _report(name: str, program: programs.Program, args: tuple, hbm_bytes: int,
            model_flops: float, per_device_batch: float, sequence: int) -> ProgramReport:
  """Compiles program(*args) (abstract args) and reads XLA's memory analysis."""
  try:
    stats = program.lower(*args).compile().memory_analysis()
  except jax.errors.JaxRuntimeError as error:
    # The TPU compiler stops once temporaries alone exceed the HBM; report what it said.
    match = _TEMPORARIES_OVER_HBM.search(str(error))
    if "RESOURCE_EXHAUSTED" not in str(error) or not match:
      raise
    temp = int(float(match.group(1)) * 1024 ** "KMGT".index(match.group(2)) * 1024)
    return ProgramReport(name + " (compiler stopped: temporaries exceed the HBM)",
                         _argument_bytes_per_chip(args), 0, 0, temp, 0, hbm_bytes,
                         model_flops, per_device_batch, sequence)
  host = sum(getattr(stats, f"host_{k}_size_in_bytes", 0) for k in ("argument", "output", "temp"))
  return ProgramReport(name, stats.argument_size_in_bytes, stats.output_size_in_bytes,
                       stats.alias_size_in_bytes, stats.temp_size_in_bytes, host, hbm_bytes,
                       model_flops, per_device_batch, sequence)


def compile_train_step(mesh, hbm_bytes: int) -> list[ProgramReport]:
  """The train step the training gin describes, lowered with abstract state and batch."""
  objective = gin_utils.bound_value("train.objective")
  train_input = gin_utils.bound_value("train.train_input")
  total_steps = gin_utils.bound_value("train.total_steps", 1000)
  num_micro = gin_utils.bound_value("train.num_micro_batches", 1)
  make_schedule = gin_utils.bound_value("train.make_schedule", optimizers.make_schedule)
  make_optimizer = gin_utils.bound_value("train.make_optimizer", optimizers.make_optimizer)
  seed = gin_utils.bound_value("train.seed", 0)
  schedule = make_schedule(total_steps=total_steps)
  optimizer = make_optimizer(learning_rate=schedule)
  batch_shards = programs.batch_multiple(mesh)
  if train_input.batch_size % (num_micro * batch_shards):
    raise gin_utils.BindingError(
        f"BATCH_SIZE {train_input.batch_size} must be a multiple of num_micro_batches "
        f"({num_micro}) x data x fsdp ({batch_shards}) on this mesh")
  abstract_state, state_shardings = train_step_lib.state_shardings(objective, optimizer, mesh)
  converter = objective.make_feature_converter(train_input.pack)
  lengths = converter.get_model_feature_lengths(train_input.task_feature_lengths)
  batch = {name: _int_input((train_input.batch_size, length),
                            partitioning.batch_sharding(mesh, 2),
                            converter.MODEL_FEATURES[name].dtype.as_numpy_dtype)
           for name, length in lengths.items()}
  batch_shardings = {name: value.sharding for name, value in batch.items()}
  program = programs.train_step(objective, optimizer, schedule, num_micro, seed,
                                state_shardings, batch_shardings, mesh)
  _, step_flops = train_step_lib.tokens_and_flops(objective, lengths, train_input.batch_size)
  name = "train step" if num_micro == 1 else f"train step ({num_micro} micro-batches)"
  state = checkpointing.abstract_with_shardings(abstract_state, state_shardings)
  return [_report(name, program, (state, batch),
                  hbm_bytes, step_flops, train_input.batch_size / mesh.size,
                  max(lengths.values()))]


def _sampler_flops(config, batch: int, num_samples: int, prompt: int, new_tokens: int) -> float:
  prefill = batch * prompt * flops.forward_flops_per_token(config, prompt)
  decode = sum(batch * num_samples * flops.forward_flops_per_token(config, prompt + t)
               for t in range(new_tokens))
  return prefill + decode


SERVING_PROGRAMS = ("sampler", "consensus")


def compile_serving(mesh, hbm_bytes: int, members: int,
                    which: Sequence[str] = SERVING_PROGRAMS) -> list[ProgramReport]:
  """The sampler and/or the consensus program runs/infer.gin describes, for one batch of
  groups."""
  unknown = sorted(set(which) - set(SERVING_PROGRAMS))
  if unknown or not which:
    raise gin_utils.BindingError(f"precompile.serving_programs: {list(which)}; choose from "
                                 f"{SERVING_PROGRAMS}")
  policy_config = gin_utils.bound_value("infer.policy_config")
  rm_config = gin_utils.bound_value("infer.rm_config")
  sampler = gin_utils.bound_value("infer.sampler")
  groups = gin_utils.bound_value("infer.groups_per_batch", 4)
  rm_lengths = gin_utils.bound_value("infer.rm_lengths", None) or {"inputs": 128,
                                                                   "targets": 96}
  rule = gin_utils.bound_value("infer.rule", "utilitarian")
  batch = math.ceil(groups / programs.batch_multiple(mesh)) * programs.batch_multiple(mesh)
  buckets = [b for b in sampler.prompt_buckets
             if b + sampler.max_new_tokens <= policy_config.max_seq_len]
  if not buckets:
    raise gin_utils.BindingError(f"no prompt bucket of {sampler.prompt_buckets} leaves room "
                                 f"for {sampler.max_new_tokens} new tokens")
  prompt = max(buckets)
  serving_config = programs.serving_config(policy_config, sampler)
  policy = checkpointing.abstract_with_shardings(
      params_lib.abstract_params(serving_config), programs.policy_shardings(serving_config, mesh))
  b1, b2, b3 = (partitioning.batch_sharding(mesh, n) for n in (1, 2, 3))
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=programs.replicated(mesh))
  prompts_args = (_int_input((batch, prompt), b2), _int_input((batch,), b1))
  sample_flops = _sampler_flops(serving_config, batch, sampler.num_samples, prompt,
                                sampler.max_new_tokens)
  reports = []
  if "sampler" in which:
    reports.append(_report(
        "sampler (prefill + decode)", programs.sampler(serving_config, sampler, mesh),
        (policy, *prompts_args, rng), hbm_bytes, sample_flops, batch / mesh.size,
        prompt + sampler.max_new_tokens))
  if "consensus" in which:
    cfg = consensus.ConsensusConfig(sampler=sampler, statement_head_ids=(5, 6), rule=rule)
    member_args = (_int_input((batch, members, rm_lengths["inputs"]), b3),
                   _int_input((batch, members), b2),
                   _int_input((batch, members), b2, jnp.bool_))
    candidate_len = sampler.max_new_tokens + 3
    score_flops = (batch * members * rm_lengths["inputs"] * flops.forward_flops_per_token(
        rm_config, rm_lengths["inputs"]) + batch * members * sampler.num_samples *
        candidate_len * flops.forward_flops_per_token(rm_config,
                                                      rm_lengths["inputs"] + candidate_len))
    rm = checkpointing.abstract_with_shardings(
        params_lib.abstract_params(rm_config, reward.RewardModel),
        programs.reward_shardings(rm_config, mesh))
    reports.append(_report(
        "consensus program (sample, score, select)",
        programs.consensus_program(serving_config, rm_config, cfg, mesh),
        (policy, rm, *prompts_args, *member_args, rng), hbm_bytes, sample_flops + score_flops,
        batch / mesh.size, prompt + sampler.max_new_tokens))
  return reports


@gin.configurable
def precompile(topology: str = gin.REQUIRED, hbm_gib: float = gin.REQUIRED,
               chip_config_name: str = "default",
               chips_per_host_bounds: Optional[Sequence[int]] = None, num_slices: int = 1,
               name: Optional[str] = None, step_seconds: Optional[float] = None,
               members_per_group: int = 5,
               serving_programs: Sequence[str] = SERVING_PROGRAMS) -> list[ProgramReport]:
  """Compiles the run gin's programs for `topology` and prints the memory and FLOPs report.

  Args:
    topology: libtpu's topology name, e.g. 'v5p:4x4x4' (v5p-128), 'v4:4x4x4' (v4-128),
      'v5e:16x16' (v5e-256).
    hbm_gib: memory per chip the compiler may use (the fit criterion).
    chip_config_name: 'megacore' for v4 and v5p (one device per chip), 'default' for v5e.
    chips_per_host_bounds, num_slices: the hosts' chips and the number of slices.
    name: the recipe's name in the last line (default: the topology).
    step_seconds: a step time to turn model FLOPs into MFU (e.g. one measured on the pod).
    members_per_group: members scored per group by the consensus program.
    serving_programs: with runs/infer.gin, which of 'sampler' and 'consensus' to compile.
  """
  devices = topology_devices(topology, chip_config_name, chips_per_host_bounds, num_slices)
  mesh = partitioning.make_mesh(devices=devices)
  hbm_bytes = int(hbm_gib * GIB)
  device_kind = devices[0].device_kind
  print(f"precompile: {topology} ({len(devices)} chips, {device_kind}, "
        f"{len({d.process_index for d in devices})} hosts), mesh {dict(mesh.shape)}, "
        f"{hbm_gib:g} GiB HBM per chip")
  if gin_utils.is_bound("train.objective"):
    reports = compile_train_step(mesh, hbm_bytes)
  elif gin_utils.is_bound("infer.policy_config"):
    reports = compile_serving(mesh, hbm_bytes, members_per_group, serving_programs)
  else:
    raise gin_utils.BindingError(
        "precompile: the gin files bind neither train.* (a training run gin such as "
        "runs/sft.gin) nor infer.* (runs/infer.gin); nothing to compile")
  peak = flops.known_peak_flops_per_device(device_kind)
  name = name or topology
  for report in reports:
    print(f"\n{report.name}: per chip")
    print(report.table())
    line = (f"  model FLOPs per step {report.model_flops / 1e12:.4g} TFLOP "
            f"({report.model_flops / len(devices) / 1e12:.4g} per chip)")
    if step_seconds and peak:
      mfu = report.model_flops / (step_seconds * len(devices) * peak)
      line += f"; at {step_seconds:g} s per step: MFU {mfu:.1%} of {peak / 1e12:.0f} TFLOP/s"
    print(line)
  for report in reports:
    print(f"{name}: {report.total_bytes / GIB:.1f} GiB of {hbm_gib:g} GiB per chip, "
          f"{'fits' if report.fits else 'does not fit'}, per-device batch "
          f"{report.per_device_batch:g}, sequence {report.sequence}, "
          f"{report.model_flops / 1e12:.4g} model TFLOP per step"
          + (f" ({report.name})" if len(reports) > 1 else ""))
  too_big = [r for r in reports if not r.fits]
  if too_big:
    raise DoesNotFitError(
        "; ".join(f"{r.name} needs {r.total_bytes / GIB:.1f} GiB per chip, more than the "
                  f"{hbm_gib:g} GiB of {topology}" for r in too_big)
        + ": lower the per-device batch or sequence, remat more (DecoderConfig.remat_policy), "
        "or shard over more chips")
  return reports
