"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, excluded by default (run with -m slow)")


@pytest.fixture(scope="session")
def shared_data_dir():
    """../shared/data beside the checkout (read in place, never written)."""
    from consensus_jax.data import paths

    return paths.shared_data_dir()
