#!/usr/bin/env bash
# Runs the train binary as N processes on this machine (one global mesh over their CPU devices),
# as a pod's hosts would: each process feeds its own rows; process 0 writes logs and checkpoints.
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 bash launch/local_multiprocess.sh \
#     --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/tiny.gin \
#     --gin.MODEL_DIR="'/tmp/sft_mp'" --gin.TRAIN_STEPS=20
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-4}
PORT=${PORT:-12355}
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS JAX_PLATFORMS=cpu \
    python -m consensus_jax.train --coordinator_address=127.0.0.1:$PORT \
    --num_processes="$NUM_PROCESSES" --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
