#!/usr/bin/env bash
# The main job: on a fresh machine, set up, then train a small SFT policy and a personalised
# reward model on the bundled data, and show what the selection is worth: the RM next to its
# peers, and for held-out groups the chosen statement with each member's predicted and judged
# agreement and a head-to-head line, judged by simulated raters the selector never saw.
# About 16-22 minutes on a 2-core CPU once .venv is set up (README, The two commands). Results go
# to $WORK (default ./out/main), which is reused: a second run resumes or skips finished steps.
#
#   bash launch/main.sh                      # everything
#   SFT_STEPS=1000 RM_STEPS=1500 bash launch/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
. .venv/bin/activate
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
WORK=${WORK:-out/main}
SFT_STEPS=${SFT_STEPS:-600}
RM_STEPS=${RM_STEPS:-600}
STUDY_GROUPS=${STUDY_GROUPS:-30}
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
  --gin.LEARNING_RATE=2e-3 --gin.train.eval_every_steps=200 --gin.train.log_every_steps=50

echo "== 3/5 reward model: a member's opinion + candidates -> agreement ($RM_STEPS steps)"
sft_last=$(ls "$WORK/sft/checkpoints" | sort -n | tail -1)
python -m consensus_jax.train --gin_file=gin_configs/runs/reward_lists.gin "${common[@]}" \
  --gin.MODEL_DIR="'$WORK/rm'" --gin.TRAIN_STEPS="$RM_STEPS" \
  --gin.RewardObjective.backbone_from="'$WORK/sft/checkpoints/$sft_last'" \
  --gin.train.eval_every_steps=200 --gin.train.log_every_steps=50

echo "== 4/5 reward model next to its peers (held-out synthetic groups, held-out Polis people)"
polis_dir=$(python -c 'from consensus_jax.data import paths; print(paths.polis_dir())')
python -m consensus_jax.eval --gin_file=gin_configs/runs/reward_eval.gin "${common[@]}" \
  --gin.MODEL_DIR="'$WORK/rm'" --gin.POLIS_DIR="'$polis_dir'" \
  --gin.evaluate_reward_model.max_groups=50 --gin.evaluate_reward_model.polis_max_votes=500 \
  --gin.evaluate_reward_model.bag_of_words_train_groups=500

echo "== 5/5 held-out groups: sample 16 candidates, score every member, pick by welfare, judge"
python -m consensus_jax.eval --gin_file=gin_configs/runs/study_head_to_head.gin \
  --gin_file="$MODEL_GIN" --gin.POLICY_DIR="'$WORK/sft'" --gin.RM_DIR="'$WORK/rm'" \
  --gin.DATA_DIR="'$DATA'" --gin.VOCAB_DIR="'$VOCAB'" --gin.OUTPUT_DIR="'$WORK/studies'" \
  --gin.STUDY_GROUPS="$STUDY_GROUPS" --gin.STUDY_SPLITS="('ood_test',)" --gin.TEMPERATURE=0.7 \
  --gin.run_study.print_examples=3
echo "reward metrics: $WORK/rm/eval/reward_metrics.md"
echo "head-to-head: $WORK/studies/head_to_head.md and PNGs"
