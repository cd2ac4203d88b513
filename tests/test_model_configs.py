"""The model gins: parameter counts from abstract shapes (nothing allocated)."""
import gin
import pytest

from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig
from tests.conftest import REPO_ROOT

PUBLISHED = {"llama2_70b": 68.98e9, "llama2_7b": 6.74e9}


def _config(name):
  gin.clear_config()
  gin.parse_config_file(str(REPO_ROOT / "gin_configs" / "models" / f"{name}.gin"))
  try:
    return DecoderConfig()
  finally:
    gin.clear_config()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
  count = params_lib.count_params(_config(name))
  assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.01, count


def test_chinchilla_shapes():
  config = _config("chinchilla_70b")
  assert (config.num_layers, config.d_model, config.num_heads, config.resolved_head_dim,
          config.mlp_dim, config.mlp_kind) == (80, 8192, 64, 128, 32768, "gelu")
  # The README states this count; keep them in step.
  assert round(params_lib.count_params(config) / 1e9, 2) == 64.95


@pytest.mark.parametrize("name, low, high", [
    ("tiny", 1e6, 5e6), ("mini", 5e6, 9e6), ("small", 25e6, 45e6), ("rm_1b", 1.2e9, 1.6e9)])
def test_small_configs_are_the_advertised_size(name, low, high):
  assert low < params_lib.count_params(_config(name)) < high
