"""consensus_jax: fine-tuning language models to find agreement among people with diverse views."""
import setuptools

# Pinned together and checked on Python 3.11 (see ../shared/DESIGN.md, "Facts checked").
JAX_VERSION = "0.10.2"

CORE = [
    f"jax=={JAX_VERSION}",
    f"jaxlib=={JAX_VERSION}",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "sentencepiece==0.2.3",
    "gin-config==0.5.0",
    "absl-py==2.5.1",
    "numpy>=2.0,<3",
    "matplotlib>=3.8",  # the studies' PNG plots
    "pyyaml>=6.0",  # the GKE launcher's JobSet manifests
]

EXTRAS = {
    # Hugging Face interop and the torch peer in the benchmarks. torch 2.13.0 is the CPU wheel.
    "hf": ["torch==2.13.0", "transformers==5.24.0", "safetensors==0.8.0"],
    # libtpu matching the pinned jax (jax[tpu]==0.10.2 pins libtpu 0.0.42.*): ahead-of-time
    # compilation for TPU topologies on a CPU host.
    "tpu": ["libtpu==0.0.42.*"],
    "test": ["pytest==9.2.0", "scipy>=1.14"],
}

setuptools.setup(
    name="consensus_jax",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["consensus_jax", "consensus_jax.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
)
