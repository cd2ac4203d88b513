#!/usr/bin/env bash
# Renders a GKE JobSet for a TPU slice and applies it with kubectl; --dry_run prints the YAML.
#   bash launch/gke.sh --name=sft70b --accelerator_type=v5p-128 --image=IMAGE \
#     --model_dir=gs://my-bucket/sft70b -- --gin_file=gin_configs/runs/sft.gin \
#     --gin_file=gin_configs/models/llama2_70b.gin
# See consensus_jax/launch/gke.py (coordinator, preemption, restarts).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m consensus_jax.launch.gke "$@"
