"""Scanned, unrolled and fused param layouts compute the same function."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax import partitioning
from consensus_jax.models import decoder, hf_import, param_layout, params as params_lib
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=40, num_layers=3, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=40, max_seq_len=32)


def _logits(config, params, tokens):
  return decoder.Decoder(config).apply({"params": params}, tokens)


@pytest.mark.parametrize("mlp_kind", ["swiglu", "gelu"])
def test_fused_and_unrolled_layouts_give_the_same_logits(mlp_kind):
  config = CONFIG.replace(mlp_kind=mlp_kind)
  params = nn.meta.unbox(decoder.Decoder(config).init(jax.random.key(0),
                                                      jnp.zeros((1, 8), jnp.int32))["params"])
  tokens = jax.random.randint(jax.random.key(1), (2, 11), 0, config.vocab_size)
  expected = _logits(config, params, tokens)

  fused_config, fused = param_layout.fuse_projections(config, params)
  assert fused_config.fused_projections and fused_config.scan_layers
  assert fused["layers"]["attention"]["qkv"].shape == (3, 32, 2, 2 + 2, 8)
  assert set(fused["layers"]["mlp"]) == ({"wi_fused", "wo"} if mlp_kind == "swiglu"
                                         else {"wi_up", "wo"})
  np.testing.assert_allclose(_logits(fused_config, fused, tokens), expected, atol=1e-5)

  decode_config, decode_params = param_layout.decode_layout(config, params)
  assert not decode_config.scan_layers and "layers_2" in decode_params
  np.testing.assert_allclose(_logits(decode_config, decode_params, tokens), expected, atol=1e-5)


def test_fused_params_init_with_their_own_shapes_and_shard_over_kv_heads():
  config = CONFIG.replace(fused_projections=True, num_kv_heads=4)
  abstract = params_lib.abstract_params(config)
  assert abstract["layers"]["attention"]["qkv"].shape == (3, 32, 4, 1 + 2, 8)
  assert abstract["layers"]["mlp"]["wi_fused"].shape == (3, 32, 2, 40)
  shardings = params_lib.param_shardings(config, partitioning.make_mesh(data=2, tensor=4))
  assert tuple(shardings["layers"]["attention"]["qkv"].spec) == (None, None, "tensor", None,
                                                                None)
  assert tuple(shardings["layers"]["mlp"]["wi_fused"].spec) == (None, None, None, "tensor")


def test_to_hf_refuses_fused_kernels(tmp_path):
  params = params_lib.abstract_params(CONFIG)
  config, fused = param_layout.fuse_projections(CONFIG, jax.tree_util.tree_map(
      lambda x: np.zeros(x.shape, x.dtype), params))
  with pytest.raises(ValueError, match="fused_projections=True"):
    hf_import.to_hf(config, fused, tmp_path)
