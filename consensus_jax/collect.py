r"""Collection binary: the SFT policy's samples for training groups, rated by their members.

    python -m consensus_jax.collect --gin_file=gin_configs/runs/collect.gin \
      --gin_file=gin_configs/models/tiny.gin --gin.POLICY_DIR="'/tmp/sft'" \
      --gin.DATA_DIR="'/tmp/data'" --gin.VOCAB_DIR="'/tmp/vocab'" \
      --gin.OUTPUT_DIR="'/tmp/data_rated'"

Writes OUTPUT_DIR as a DATA_DIR for the reward model (sample_collection.py): the training rounds
with the policy's rated samples added as candidates, the test splits copied unchanged.
"""
from consensus_jax import binary_flags, sample_collection

if __name__ == "__main__":
  binary_flags.run_gin_binary(sample_collection.collect_rated_samples)
