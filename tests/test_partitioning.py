"""Mesh builder, logical-axis rules, and sharded forward passes on 8 simulated CPU devices."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from consensus_jax import partitioning
from consensus_jax.models import decoder, params as params_lib
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=256, num_layers=2, d_model=64, num_heads=8, num_kv_heads=4,
                       mlp_dim=128, max_seq_len=64)


def test_eight_devices_are_simulated():
  assert jax.device_count() == 8


@pytest.mark.parametrize("axes, expected", [
    (dict(data=-1), (8, 1, 1)),
    (dict(data=2, tensor=4), (2, 1, 4)),
    (dict(data=1, fsdp=-1, tensor=2), (1, 4, 2)),
    (dict(data=-1, dcn_data=2), (8, 1, 1)),
    (dict(data=1, fsdp=2, tensor=2, dcn_data=2), (2, 2, 2)),
])
def test_mesh_shapes(axes, expected):
  mesh = partitioning.make_mesh(**axes)
  assert tuple(mesh.shape[a] for a in partitioning.MESH_AXES) == expected
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_multislice_keeps_each_slice_contiguous_on_inner_axes():
  mesh = partitioning.make_mesh(data=1, fsdp=2, tensor=2, dcn_data=2)
  # Slice s holds devices 4s..4s+3; data is the dcn axis, so each data row is one slice.
  for row in range(2):
    ids = sorted(d.id for d in mesh.devices[row].flat)
    assert ids == list(range(4 * row, 4 * row + 4))


@pytest.mark.parametrize("axes, message", [
    (dict(data=3), "need 3 devices"),
    (dict(data=-1, fsdp=-1), "at most one axis may be -1"),
    (dict(data=-1, tensor=3), "not divisible by 3"),
    (dict(data=-1, dcn_data=3), "do not split into 3 slices"),
])
def test_mesh_errors(axes, message):
  with pytest.raises(ValueError, match=message):
    partitioning.make_mesh(**axes)


def test_uncovered_logical_axis_is_an_error():
  mesh = partitioning.make_mesh(data=2, tensor=4)
  with pytest.raises(partitioning.UncoveredAxisError, match="'experts'.*not covered"):
    partitioning.logical_to_mesh_spec(("experts", "embed"), (8, 64), mesh, where="moe/w")

  class Rogue(nn.Module):
    @nn.compact
    def __call__(self, x):
      return x @ self.param("w", nn.with_logical_partitioning(nn.initializers.ones,
                                                              ("embed", "experts")), (4, 4))

  boxed = jax.eval_shape(Rogue().init, jax.random.key(0), jnp.ones((1, 4)))["params"]
  with pytest.raises(partitioning.UncoveredAxisError, match="w: logical axis 'experts'"):
    partitioning.param_shardings(boxed, mesh)


def test_unannotated_parameter_is_an_error():
  mesh = partitioning.make_mesh(data=-1)
  boxed = jax.eval_shape(nn.Dense(4, use_bias=False).init, jax.random.key(0), jnp.ones((1, 4)))["params"]
  with pytest.raises(partitioning.UncoveredAxisError, match="kernel: has no logical axis"):
    partitioning.param_shardings(boxed, mesh)


def test_params_get_the_shardings_the_rules_say():
  mesh = partitioning.make_mesh(data=1, fsdp=2, tensor=4)
  shardings = params_lib.param_shardings(CONFIG, mesh)
  assert shardings["embedding"].spec == P("tensor", "fsdp")  # (vocab, embed)
  assert shardings["unembed"].spec == P("fsdp", "tensor")  # (embed, vocab)
  attention = shardings["layers"]["attention"]
  assert attention["query"].spec == P(None, "fsdp", "tensor", None)  # (layers, embed, heads, hd)
  assert attention["key"].spec == P(None, "fsdp", "tensor", None)
  assert attention["out"].spec == P(None, "tensor", None, "fsdp")
  assert shardings["layers"]["mlp"]["wo"].spec == P(None, "tensor", "fsdp")
  assert shardings["final_norm"]["scale"].spec == P(None)
  # And the initialised arrays really are laid out that way.
  params = params_lib.init_params(CONFIG, mesh, jax.random.key(0))
  wq = params["layers"]["attention"]["query"]
  assert wq.sharding.spec == P(None, "fsdp", "tensor", None)
  assert wq.addressable_shards[0].data.shape == (2, 32, 2, 8)


def test_indivisible_dimension_is_replicated_not_rejected():
  mesh = partitioning.make_mesh(data=1, fsdp=1, tensor=8)
  # 4 kv heads cannot split 8 ways: that dimension stays whole; 8 query heads do split.
  shardings = params_lib.param_shardings(CONFIG, mesh)
  assert shardings["layers"]["attention"]["key"].spec == P(None, None, None, None)
  assert shardings["layers"]["attention"]["query"].spec == P(None, None, "tensor", None)


def test_optimizer_state_follows_params():
  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  shardings = params_lib.param_shardings(CONFIG, mesh)
  optimizer = optax.adamw(1e-3)
  abstract_state = jax.eval_shape(optimizer.init, params_lib.abstract_params(CONFIG))
  state_shardings = partitioning.optimizer_state_shardings(optimizer, abstract_state, shardings,
                                                           mesh)
  adam = state_shardings[0]
  assert adam.mu["layers"]["mlp"]["wi_up"] == shardings["layers"]["mlp"]["wi_up"]
  assert adam.nu["embedding"] == shardings["embedding"]
  assert adam.count.spec == P()


def test_host_local_batch_becomes_global():
  mesh = partitioning.make_mesh(data=2, fsdp=2, tensor=2)
  tokens = np.arange(8 * 5).reshape(8, 5)
  batch = partitioning.host_local_batch_to_global({"tokens": tokens}, mesh)
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), tokens)


def _forward(mesh, params, tokens, segment_ids):
  model = decoder.Decoder(CONFIG)
  shardings = params_lib.param_shardings(CONFIG, mesh)
  params = jax.device_put(params, shardings)
  fn = jax.jit(lambda p, t, s: model.apply({"params": p}, t, segment_ids_BL=s),
               in_shardings=(shardings, partitioning.batch_sharding(mesh),
                             partitioning.batch_sharding(mesh)))
  with jax.set_mesh(mesh):
    logits = fn(params, tokens, segment_ids)
  return logits


@pytest.mark.parametrize("axes", [dict(data=2, tensor=4), dict(data=1, fsdp=8)],
                         ids=["data2_tensor4", "fsdp8"])
def test_sharded_forward_equals_single_device(axes):
  params = nn.meta.unbox(jax.jit(lambda k: decoder.Decoder(CONFIG).init(
      k, jnp.zeros((1, 8), jnp.int32))["params"])(jax.random.key(3)))
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, CONFIG.vocab_size, (8, 32)))
  segment_ids = jnp.asarray(np.repeat([[1] * 20 + [2] * 8 + [0] * 4], 8, axis=0))
  single = decoder.Decoder(CONFIG).apply({"params": jax.device_get(params)}, tokens,
                                         segment_ids_BL=segment_ids)
  mesh = partitioning.make_mesh(**axes)
  sharded = _forward(mesh, params, tokens, segment_ids)
  batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
  assert sharded.sharding.shard_shape(sharded.shape)[0] == 8 // batch_ways
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=2e-5, rtol=2e-5)
