r"""Training binary (SFT and the reward model), T5X style.

    python -m consensus_jax.train \
      --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/tiny.gin \
      --gin.MODEL_DIR="'/tmp/sft'" --gin.TRAIN_STEPS=200

Gin files are found relative to --gin_search_paths, then the repository and its gin_configs/.
Multi-process (one process per host, or several on one machine): pass --coordinator_address,
--num_processes and --process_id, or --multiprocess to let JAX detect a TPU pod / SLURM / k8s
cluster, or set JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID) in the
environment. Each process feeds its own rows of the global batch; only process 0 writes logs,
summaries and gin configs. Setting JAX_COMPILATION_CACHE_DIR lets a restarted (preempted) run
reuse the compiled train step instead of compiling it again.
"""
from consensus_jax import binary_flags
from consensus_jax import trainer

if __name__ == "__main__":
  binary_flags.run_gin_binary(trainer.train)
