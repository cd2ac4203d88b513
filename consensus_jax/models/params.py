"""Abstract and sharded initialisation of decoder params (nothing allocated until asked)."""
from typing import Any

import flax.linen as nn
import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from consensus_jax import partitioning
from consensus_jax.models.config import DecoderConfig
from consensus_jax.models.decoder import Decoder

_INIT_LENGTH = 8  # Params do not depend on sequence length; a short dummy keeps init cheap.


# Every model here is built as model_cls(config) and called on tokens_BL: the Decoder, and the
# reward model around it.
ModelClass = type[nn.Module]


def _init_boxed(config: DecoderConfig, rng: jax.Array, model_cls: ModelClass = Decoder) -> Any:
  tokens_BL = jnp.zeros((1, _INIT_LENGTH), jnp.int32)
  return model_cls(config).init(rng, tokens_BL)["params"]


def abstract_boxed_params(config: DecoderConfig, model_cls: ModelClass = Decoder) -> Any:
  """Param shapes with their logical-axis metadata, via jax.eval_shape."""
  return jax.eval_shape(functools.partial(_init_boxed, config, model_cls=model_cls),
                        jax.random.key(0))


def abstract_params(config: DecoderConfig, model_cls: ModelClass = Decoder) -> Any:
  return nn.meta.unbox(abstract_boxed_params(config, model_cls))


def count_params(config: DecoderConfig, model_cls: ModelClass = Decoder) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(abstract_params(config, model_cls)))


def param_shardings(config: DecoderConfig, mesh: Mesh, model_cls: ModelClass = Decoder) -> Any:
  return partitioning.param_shardings(abstract_boxed_params(config, model_cls), mesh)


def init_params(config: DecoderConfig, mesh: Mesh, rng: jax.Array,
                model_cls: ModelClass = Decoder) -> Any:
  """Random params created directly in their sharded layout (no host-side full copy)."""
  shardings = param_shardings(config, mesh, model_cls)
  init = jax.jit(lambda key: nn.meta.unbox(_init_boxed(config, key, model_cls)),
                 out_shardings=shardings)
  with jax.set_mesh(mesh):
    return init(rng)
