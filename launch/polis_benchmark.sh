#!/usr/bin/env bash
# The Polis benchmark on your own conversations: trains the documented Polis reward model
# (runs/reward_polis.gin, `tiny`, both modes) on the bundled conversations, or reuses it when
# OUT_DIR/rm already holds a finished run, then scores every conversation folder in POLIS_DIR:
# the RM's AUC next to its peers on held-out participants (polis_auc.json / .md) and statement
# selection by each welfare rule against random, popularity and hindsight (polis_selection.json
# / .md). About 12 minutes on a 2-core CPU for the eleven bundled conversations.
#
#   bash launch/polis_benchmark.sh POLIS_DIR OUT_DIR
#   RM_STEPS=1600 bash launch/polis_benchmark.sh ~/my_polis_exports out/polis
# Environment: RM_STEPS (800), MODEL_GIN (gin_configs/models/tiny.gin), VOCAB_SIZE (8000).
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: bash launch/polis_benchmark.sh POLIS_DIR OUT_DIR (POLIS_DIR: folders of Polis exports)" >&2
  exit 2
fi
POLIS_DIR=$(cd "$1" && pwd) || { echo "polis_benchmark.sh: no directory $1" >&2; exit 2; }
mkdir -p "$2"
OUT_DIR=$(cd "$2" && pwd)
cd "$(dirname "$0")/.."
bash launch/setup.sh
. .venv/bin/activate
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
RM_STEPS=${RM_STEPS:-800}
MODEL_GIN=${MODEL_GIN:-gin_configs/models/tiny.gin}
VOCAB_SIZE=${VOCAB_SIZE:-8000}
bundled=$(python -c 'from consensus_jax.data import paths; print(paths.polis_dir())')
common=(--gin_file="$MODEL_GIN" --gin.VOCAB_DIR="'$OUT_DIR/vocab'" --gin.VOCAB_SIZE="$VOCAB_SIZE")

if [ -d "$OUT_DIR/rm/checkpoints/$RM_STEPS" ]; then
  echo "== 1/2 reusing the Polis reward model in $OUT_DIR/rm (step $RM_STEPS)"
else
  echo "== 1/2 Polis reward model on the bundled conversations ($RM_STEPS steps)"
  python -m consensus_jax.train --gin_file=gin_configs/runs/reward_polis.gin "${common[@]}" \
    --gin.MODEL_DIR="'$OUT_DIR/rm'" --gin.POLIS_DIR="'$bundled'" --gin.TRAIN_STEPS="$RM_STEPS" \
    --gin.train.log_every_steps=100
fi

echo "== 2/2 AUC and selection on every conversation in $POLIS_DIR"
python -m consensus_jax.eval --gin_file=gin_configs/runs/polis_selection.gin "${common[@]}" \
  --gin.MODEL_DIR="'$OUT_DIR/rm'" --gin.POLIS_DIR="'$POLIS_DIR'" --gin.OUTPUT_DIR="'$OUT_DIR'"
echo "wrote $OUT_DIR/polis_auc.md and $OUT_DIR/polis_selection.md"
