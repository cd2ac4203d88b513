#!/usr/bin/env bash
# Launches a run on every host of a Cloud TPU VM slice (run from your workstation).
#   TPU_NAME=my-v5p-128 ZONE=us-east5-a bash launch/tpu_vm.sh \
#     --gin_file=gin_configs/runs/sft.gin --gin_file=gin_configs/models/llama2_70b.gin \
#     --gin.MODEL_DIR="'gs://my-bucket/sft70b'" --gin.partitioning.make_mesh.fsdp=-1 \
#     --gin.partitioning.make_mesh.data=1
# Every host clones the same commit, installs with the tpu extra (libtpu), and starts the train
# binary with --multiprocess: jax.distributed.initialize() finds the slice's hosts itself.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_URL=${REPO_URL:-$(git remote get-url origin)}
COMMIT=${COMMIT:-$(git rev-parse HEAD)}
args=$(printf " %q" "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  [ -d consensus_jax ] || git clone $REPO_URL consensus_jax
  cd consensus_jax && git fetch -q && git checkout -q $COMMIT
  python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'
  python -m consensus_jax.train --multiprocess $args"
