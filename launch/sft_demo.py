r"""A few minutes of SFT on the synthetic task, then greedy continuations of held-out prompts.

    python launch/sft_demo.py --work_dir=/tmp/consensus_jax_sft_demo \
      --model_gin=gin_configs/models/small.gin --train_steps=150

Generates the synthetic rounds (if missing), trains through the same gin path as the train
binary (runs/sft.gin + the model gin + the overrides below), then prints the validation loss
before and after and the greedy continuations of two iid_test prompts next to the statement
the group rated best. Re-running resumes from the checkpoint in <work_dir>/model.
"""
import argparse
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import logging  # noqa: E402

from consensus_jax import serving  # noqa: E402
from consensus_jax import gin_utils  # noqa: E402
from consensus_jax import trainer  # noqa: E402
from consensus_jax.data import prompts  # noqa: E402
from consensus_jax.data import records  # noqa: E402
from consensus_jax.data import synthetic  # noqa: E402
from consensus_jax.data import vocab  # noqa: E402
from consensus_jax.models.config import DecoderConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
# Long enough for ~90% of prompts (question + 3-5 opinions) and statements untruncated.
TASK_FEATURE_LENGTHS = {"inputs": 320, "targets": 128}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", default="/tmp/consensus_jax_sft_demo")
  parser.add_argument("--model_gin", default="gin_configs/models/small.gin")
  parser.add_argument("--train_steps", type=int, default=150)
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--num_groups", type=int, default=1000, help="synthetic train rounds")
  parser.add_argument("--eval_every", type=int, default=50)
  parser.add_argument("--eval_batches", type=int, default=5)
  parser.add_argument("--num_samples", type=int, default=2)
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)

  work = pathlib.Path(args.work_dir)
  data_dir, vocab_dir, model_dir = work / "rounds", work / "vocab", work / "model"
  if not (data_dir / "train.jsonl").is_file():
    synthetic.generate_dataset(data_dir, {"train": args.num_groups, "iid_test": 100,
                                          "ood_test": 100}, seed=0)

  gin_utils.parse_gin(
      [str(REPO / "gin_configs/runs/sft.gin"), str(REPO / args.model_gin)],
      [f"MODEL_DIR = '{model_dir}'", f"DATA_DIR = '{data_dir}'", f"VOCAB_DIR = '{vocab_dir}'",
       f"TRAIN_STEPS = {args.train_steps}", f"BATCH_SIZE = {args.batch_size}",
       f"TASK_FEATURE_LENGTHS = {TASK_FEATURE_LENGTHS}", f"LEARNING_RATE = {args.learning_rate}",
       "WARMUP_STEPS = 20", f"train.eval_every_steps = {args.eval_every}",
       f"train.eval_batches = {args.eval_batches}", "train.log_every_steps = 10",
       f"train.checkpoint_every_steps = {args.eval_every}"])
  result = trainer.train()

  evals = sorted(result.eval_metrics.items())
  for step, metrics in evals:
    print(f"validation (iid_test) step {step}: loss {metrics['loss']:.3f}, "
          f"token accuracy {metrics['accuracy']:.3f}")

  config = DecoderConfig()  # as the model gin binds it
  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size=config.vocab_size)
  shown = 0
  for round_ in records.iter_jsonl(data_dir / "iid_test.jsonl"):
    prompt_ids = prompts.policy_prompt_ids(vocabulary, round_.question.text,
                                           [o.text for o in round_.opinions])
    if len(prompt_ids) > TASK_FEATURE_LENGTHS["inputs"]:
      continue  # the model never saw the end of prompts this long
    continuation = vocabulary.decode(serving.greedy_continuations(
        config, result.state.params, [prompt_ids], vocabulary.eos_id, max_new_tokens=110)[0])
    best = round_.candidate(round_.best_candidate_id()).text
    print(f"\n=== {round_.question.text}\n--- greedy: {continuation}\n--- best-rated: {best}")
    shown += 1
    if shown == args.num_samples:
      break


if __name__ == "__main__":
  main()
