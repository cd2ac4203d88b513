#!/usr/bin/env bash
# The main job: on a fresh machine, set up, then train a small SFT policy and reward model on the
# bundled data and print consensus statements for a few example groups, with each member's
# predicted agreement. About 10-15 minutes on a 2-core CPU. Results go to $WORK (default
# ./out/main), which is reused: a second run resumes or skips finished steps.
#
#   bash launch/main.sh                      # everything
#   SFT_STEPS=600 RM_STEPS=400 bash launch/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
. .venv/bin/activate
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
WORK=${WORK:-out/main}
SFT_STEPS=${SFT_STEPS:-300}
RM_STEPS=${RM_STEPS:-200}
MODEL_GIN=${MODEL_GIN:-gin_configs/models/tiny.gin}
DATA=$WORK/data VOCAB=$WORK/vocab
mkdir -p "$WORK"
common=(--gin_file="$MODEL_GIN" --gin.DATA_DIR="'$DATA'" --gin.VOCAB_DIR="'$VOCAB'")

echo "== 1/5 synthetic deliberation data (simulated population over the bundled questions)"
[ -f "$DATA/train.jsonl" ] || python -m consensus_jax.data.synthetic --out_dir="$DATA" \
  --num_groups=2000 --num_eval_groups=100 --seed=0

echo "== 2/5 SFT: question + opinions -> the statement the group rated best ($SFT_STEPS steps)"
python -m consensus_jax.train --gin_file=gin_configs/runs/sft.gin "${common[@]}" \
  --gin.MODEL_DIR="'$WORK/sft'" --gin.TRAIN_STEPS="$SFT_STEPS" --gin.BATCH_SIZE=8 \
  --gin.LEARNING_RATE=2e-3 --gin.train.eval_every_steps=100 --gin.train.log_every_steps=25

echo "== 3/5 reward model: question + one member's opinion + candidate -> agreement ($RM_STEPS steps)"
sft_last=$(ls "$WORK/sft/checkpoints" | sort -n | tail -1)
python -m consensus_jax.train --gin_file=gin_configs/runs/reward.gin "${common[@]}" \
  --gin.MODEL_DIR="'$WORK/rm'" --gin.TRAIN_STEPS="$RM_STEPS" --gin.BATCH_SIZE=16 \
  --gin.LEARNING_RATE=1e-3 --gin.RewardObjective.backbone_from="'$WORK/sft/checkpoints/$sft_last'" \
  --gin.train.eval_every_steps=100 --gin.train.log_every_steps=25

echo "== 4/5 reward model evaluation (held-out synthetic groups, held-out Polis participants)"
python -m consensus_jax.eval --gin_file=gin_configs/runs/reward_eval.gin "${common[@]}" \
  --gin.MODEL_DIR="'$WORK/rm'" --gin.POLIS_DIR="'$(python -c 'from consensus_jax.data import paths; print(paths.polis_dir())')'" \
  --gin.evaluate_reward_model.max_groups=50 --gin.evaluate_reward_model.polis_max_votes=500

echo "== 5/5 consensus: sample 16 candidates, score every member, pick by welfare"
python -c "
import json
from consensus_jax import inference
from consensus_jax.data import records
groups = inference.groups_from_rounds(records.iter_jsonl('$DATA/iid_test.jsonl'), 4)
open('$WORK/example_groups.jsonl', 'w').write(''.join(json.dumps(g) + '\n' for g in groups))"
python -m consensus_jax.infer --gin_file=gin_configs/runs/infer.gin --gin_file="$MODEL_GIN" \
  --gin.POLICY_DIR="'$WORK/sft'" --gin.RM_DIR="'$WORK/rm'" --gin.VOCAB_DIR="'$VOCAB'" \
  --gin.INPUT_PATH="'$WORK/example_groups.jsonl'" --gin.OUTPUT_DIR="'$WORK/consensus'" \
  --gin.TEMPERATURE=0.7
echo "results: $WORK/consensus/consensus.jsonl, reward metrics: $WORK/rm/eval/reward_metrics.md"
