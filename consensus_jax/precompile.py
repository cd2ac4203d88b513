r"""Ahead-of-time compile for a TPU topology, on any host (T5X's precompile, MaxText's
train_compile): per-chip memory, model FLOPs, and whether the program fits.

    python -m consensus_jax.precompile --gin_file=gin_configs/runs/sft.gin \
      --gin_file=gin_configs/models/llama2_70b.gin --gin_file=gin_configs/mesh/v5p_128.gin \
      --gin.BATCH_SIZE=320 --gin.precompile.step_seconds=30
    python -m consensus_jax.precompile --gin_file=gin_configs/recipes/llama2_70b_sft_v5p_128.gin

The run gin chooses the programs (runs/sft.gin, runs/reward*.gin: the train step; runs/infer.gin:
the sampler and the consensus program), the mesh gin the topology and mesh axes. Exits non-zero
when a program does not fit the chips' HBM. Needs libtpu (the `tpu` extra). The job is
ahead_of_time.precompile.
"""
from consensus_jax import ahead_of_time
from consensus_jax import binary_flags
# Registers the configurables whose bindings the run gins set and precompile reads.
from consensus_jax import serving_job  # noqa: F401
from consensus_jax import trainer  # noqa: F401

if __name__ == "__main__":
  binary_flags.run_gin_binary(ahead_of_time.precompile, finalize_gin=False)
