#!/usr/bin/env bash
# Runs a binary on every host of a Cloud TPU VM slice (from a workstation with gcloud); creates
# the slice unless it exists, installs this commit on every worker. --dry_run prints the commands.
#   bash launch/tpu_vm.sh --name=my-slice --zone=us-east5-a --accelerator_type=v5p-128 -- \
#     --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/llama2_70b.gin \
#     --gin.MODEL_DIR="'gs://my-bucket/sft70b'" --gin.partitioning.make_mesh.fsdp=-1
# See consensus_jax/launch/tpu_vm.py for every option (--queued, --spot, --binary, --project).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m consensus_jax.launch.tpu_vm "$@"
