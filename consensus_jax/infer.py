r"""Consensus inference binary: groups (JSONL) in, chosen statements and scored candidates out.

    python -m consensus_jax.infer --gin_file=gin_configs/runs/infer.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.POLICY_DIR="'/tmp/sft'" \
      --gin.RM_DIR="'/tmp/rm'" --gin.INPUT_PATH="'groups.jsonl'" --gin.OUTPUT_DIR="'/tmp/out'"

Add --gin.partitioning.make_mesh.tensor=4 (data, fsdp, dcn_*) to shard the models over the
devices. The job is serving_job.infer; the models are loaded and run by serving.py.
"""
from consensus_jax import binary_flags
from consensus_jax import serving_job

if __name__ == "__main__":
  binary_flags.run_gin_binary(serving_job.infer)
