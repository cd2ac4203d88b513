"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def init_params(module, seed):
    """A flax module's params, unboxed, initialised from a [1, 8] batch of token ids."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    return nn.meta.unbox(jax.jit(module.init)(jax.random.key(seed),
                                              jnp.zeros((1, 8), jnp.int32))["params"])


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded by default (run with -m slow)")


@pytest.fixture(scope="session")
def shared_data_dir():
    """../shared/data beside the checkout (read in place, never written)."""
    from consensus_jax.data import paths

    return paths.shared_data_dir()


@dataclasses.dataclass(frozen=True)
class TrainerData:
    rounds_dir: pathlib.Path
    vocab_dir: pathlib.Path


TRAINER_VOCAB_SIZE = 1000


@pytest.fixture(scope="session")
def data(tmp_path_factory, shared_data_dir) -> TrainerData:
    """Small synthetic rounds and a 1000-id vocabulary for the train-loop and binary tests."""
    del shared_data_dir  # the question bank the generator draws from
    from consensus_jax import input_pipeline
    from consensus_jax.data import synthetic

    root = tmp_path_factory.mktemp("trainer_data")
    synthetic.generate_dataset(root / "rounds", {"train": 40, "iid_test": 8, "ood_test": 2},
                               seed=5)
    input_pipeline.register_synthetic_tasks(str(root / "rounds"), str(root / "vocab"),
                                            vocab_size=TRAINER_VOCAB_SIZE)  # trains the vocab
    return TrainerData(root / "rounds", root / "vocab")
