"""Device mesh, logical-axis rules, and the shardings of params, optimizer state and batches.

One mesh builder (`make_mesh`) and one rule table (`LOGICAL_AXIS_RULES`). Every logical axis
name that a parameter or activation uses must appear in the table: an uncovered name is an
error, never a silent replication. A rule may list several mesh axes (the dimension is split
over their product); a mesh axis already used by an earlier dimension of the same array, or one
whose size does not divide the dimension, is dropped from that dimension (replicated there), and
`describe_shardings` shows the outcome so nothing is hidden.
"""
import math
from typing import Any, Mapping, Optional, Sequence

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axes (None: replicated). Params first, then activations, then KV cache.
LOGICAL_AXIS_RULES: tuple[tuple[str, Optional[tuple[str, ...]]], ...] = (
    # Parameters.
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("head_dim", None),
    ("qkv", None),  # Fused kernels: which of (query heads..., key, value).
    ("mlp", ("tensor",)),
    ("gate_up", None),
    ("norm", None),
    ("layers", None),
    ("score", None),
    # Activations.
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", ("tensor",)),
    ("activation_kv_heads", ("tensor",)),
    ("activation_group", None),
    ("activation_head_dim", None),
    ("activation_mlp", ("tensor",)),
    ("activation_vocab", ("tensor",)),
    # KV cache (decoding).
    ("cache_batch", BATCH_AXES),
    ("cache_length", None),
    ("cache_kv_heads", ("tensor",)),
    ("cache_head_dim", None),
)
_RULES = dict(LOGICAL_AXIS_RULES)


class UncoveredAxisError(ValueError):
  """A logical axis name that LOGICAL_AXIS_RULES does not cover."""


@gin.configurable
def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, dcn_data: int = 1,
              dcn_fsdp: int = 1, dcn_tensor: int = 1,
              devices: Optional[Sequence[Any]] = None) -> Mesh:
  """The (data, fsdp, tensor) mesh. One of data/fsdp/tensor may be -1: all remaining devices.

  The dcn_* factors split each axis further across slices (the data-center network): the axis's
  full size is ici factor x dcn factor, with the dcn part outermost so that collectives along
  the ici part stay inside a slice. On devices without `slice_index` (CPU) consecutive blocks of
  devices stand in for slices, which is how multi-slice layouts are tested here.
  """
  devices = list(jax.devices() if devices is None else devices)
  dcn = (dcn_data, dcn_fsdp, dcn_tensor)
  if any(d < 1 for d in dcn):
    raise ValueError(f"make_mesh: dcn factors must be >= 1, got {dcn}")
  num_slices = math.prod(dcn)
  if len(devices) % num_slices:
    raise ValueError(f"make_mesh: {len(devices)} devices do not split into {num_slices} slices "
                     f"(dcn_data x dcn_fsdp x dcn_tensor = {dcn})")
  ici = _resolve_remaining((data, fsdp, tensor), len(devices) // num_slices)
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if num_slices == 1:
    device_grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
  elif all(hasattr(d, "slice_index") for d in devices):
    device_grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
  else:
    # [slice..., ici...] -> interleave so each mesh axis is (dcn, ici) with dcn outermost.
    grid = np.asarray(devices, dtype=object).reshape(dcn + ici)
    grid = grid.transpose(0, 3, 1, 4, 2, 5)
    device_grid = grid.reshape(tuple(d * i for d, i in zip(dcn, ici)))
  return Mesh(device_grid, MESH_AXES, axis_types=axis_types)


def single_device_mesh() -> Mesh:
  """The mesh of one device (the first): running a program without sharding it."""
  return make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])


def _resolve_remaining(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  shape = list(shape)
  unknown = [i for i, s in enumerate(shape) if s == -1]
  if len(unknown) > 1:
    raise ValueError(f"make_mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, shape))}")
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"make_mesh: axis sizes must be positive or -1, got "
                     f"{dict(zip(MESH_AXES, shape))}")
  known = math.prod(s for s in shape if s != -1)
  if unknown:
    if num_devices % known:
      raise ValueError(f"make_mesh: {num_devices} devices per slice are not divisible by "
                       f"{known} = product of the fixed axes {dict(zip(MESH_AXES, shape))}")
    shape[unknown[0]] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"make_mesh: axes {dict(zip(MESH_AXES, shape))} need {math.prod(shape)} "
                     f"devices per slice, but there are {num_devices}")
  return tuple(shape)


def logical_to_mesh_spec(logical_axes: Sequence[Optional[str]], shape: Sequence[int],
                         mesh: Mesh | jax.sharding.AbstractMesh, where: str = "array") -> P:
  """Maps one array's logical axis names to a PartitionSpec of mesh axes."""
  if len(logical_axes) != len(shape):
    raise ValueError(f"{where}: {len(logical_axes)} logical axes {tuple(logical_axes)} for an "
                     f"array of shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for name, dim in zip(logical_axes, shape):
    if name is None:
      spec.append(None)
      continue
    if name not in _RULES:
      raise UncoveredAxisError(
          f"{where}: logical axis {name!r} is not covered by partitioning.LOGICAL_AXIS_RULES; "
          "add a rule for it (None to replicate on purpose)")
    chosen = []
    for mesh_axis in _RULES[name] or ():
      size = mesh.shape[mesh_axis]
      if mesh_axis in used or size == 1:
        continue
      if dim % (math.prod(mesh.shape[a] for a in chosen) * size):
        continue
      chosen.append(mesh_axis)
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
  return P(*spec)


def logical_sharding(logical_axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                     where: str = "array") -> NamedSharding:
  return NamedSharding(mesh, logical_to_mesh_spec(logical_axes, shape, mesh, where))


def constrain(x: jax.Array, logical_axes: Sequence[Optional[str]]) -> jax.Array:
  """Sharding constraint on an activation, from the mesh set with `jax.set_mesh`.

  Without a mesh (plain single-device use) it checks the names and returns x unchanged.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    for name in logical_axes:
      if name is not None and name not in _RULES:
        raise UncoveredAxisError(f"activation: logical axis {name!r} is not covered by "
                                 "partitioning.LOGICAL_AXIS_RULES")
    return x
  spec = logical_to_mesh_spec(logical_axes, x.shape, mesh, where="activation")
  return jax.lax.with_sharding_constraint(x, spec)


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_shardings(logical_axes_tree: Any, shapes_tree: Any, mesh: Mesh) -> Any:
  """Shardings for a tree of arrays given a same-structured tree of logical-axis tuples."""
  flat_axes = jax.tree_util.tree_flatten_with_path(
      logical_axes_tree, is_leaf=lambda x: isinstance(x, P) or x is None)[0]
  flat_shapes, treedef = jax.tree_util.tree_flatten(shapes_tree)
  if len(flat_axes) != len(flat_shapes):
    raise ValueError(f"tree_shardings: {len(flat_axes)} logical-axis entries for "
                     f"{len(flat_shapes)} arrays")
  shardings = []
  for (path, axes), leaf in zip(flat_axes, flat_shapes):
    where = _path_str(path)
    if axes is None or (len(axes) == 0 and len(leaf.shape) > 0):
      raise UncoveredAxisError(f"parameter {where}: has no logical axis names; every parameter "
                               "must be declared with nn.with_logical_partitioning")
    shardings.append(logical_sharding(tuple(axes), leaf.shape, mesh, where=where))
  return jax.tree_util.tree_unflatten(treedef, shardings)


def param_shardings(boxed_abstract_params: Any, mesh: Mesh) -> Any:
  """Shardings of a Flax param tree whose leaves are nn.Partitioned (abstract or concrete)."""
  import flax.linen as nn  # Flax only where params are boxed.

  logical_specs = nn.get_partition_spec(boxed_abstract_params)
  unboxed = nn.meta.unbox(boxed_abstract_params)
  return tree_shardings(logical_specs, unboxed, mesh)


def optimizer_state_shardings(optimizer, abstract_opt_state: Any, shardings_of_params: Any,
                              mesh: Mesh) -> Any:
  """Each param-shaped optimizer leaf (moments) shares its param's sharding; the rest replicate."""
  import optax

  replicated = NamedSharding(mesh, P())
  return optax.tree_map_params(
      optimizer, lambda _, sharding: sharding, abstract_opt_state, shardings_of_params,
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch dimension split over (data, fsdp); the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def host_local_batch_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
  """Each process passes its own rows; returns global arrays sharded over the batch axes.

  In a single-process run this is a plain device_put with the batch sharding.
  """
  return {name: jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
          for name, value in batch.items()}


def describe_shardings(shardings: Any) -> str:
  """One line per array: path and PartitionSpec (for logs and the precompile report)."""
  lines = []
  for path, sharding in jax.tree_util.tree_flatten_with_path(shardings)[0]:
    lines.append(f"{_path_str(path)}: {sharding.spec}")
  return "\n".join(lines)
