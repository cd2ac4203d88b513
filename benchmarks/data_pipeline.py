"""Throughput of the SFT input pipeline (JSONL -> seqio task -> packed 8 x 256 batches).

Prints examples/s and tokens/s (row slots, and real non-padding tokens), medians over
several timed runs, and the ratio to 1000 tokens/s, roughly what the `small` model's train
step consumes on this CPU (the pipeline should be >= 10x that so it never starves a step).

  python -m benchmarks.data_pipeline [--rounds=400] [--runs=5] [--batches=100]
"""
import argparse
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import seqio  # noqa: E402

from benchmarks import common  # noqa: E402
from consensus_jax.data import feature_converters  # noqa: E402
from consensus_jax.data import synthetic  # noqa: E402
from consensus_jax.data import tasks  # noqa: E402
from consensus_jax.data import vocab  # noqa: E402

BATCH_SIZE = 8
TASK_LENGTHS = {"inputs": 192, "targets": 64}  # 256 tokens per row, the `small` shape
TRAINER_TOKENS_PER_SECOND = 1000.0


def _batches(pack: bool):
  ds = seqio.get_dataset(tasks.SFT_TASK, TASK_LENGTHS,
                         feature_converters.SFTFeatureConverter(pack=pack),
                         dataset_split="train", shuffle=False, num_epochs=None)
  return iter(ds.batch(BATCH_SIZE, drop_remainder=True).prefetch(2).as_numpy_iterator())


def _time_run(pack: bool, num_batches: int) -> tuple[float, int, int]:
  """Seconds for num_batches (after building the pipeline and one warm-up batch)."""
  batches = _batches(pack)
  next(batches)
  start = time.perf_counter()
  examples = real_tokens = 0
  for _ in range(num_batches):
    batch = next(batches)
    starts = (batch["decoder_positions"] == 0) & (batch["decoder_segment_ids"] > 0)
    examples += int(starts.sum())
    real_tokens += int((batch["decoder_segment_ids"] > 0).sum())
  return time.perf_counter() - start, examples, real_tokens


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=400)
  parser.add_argument("--runs", type=int, default=5)
  parser.add_argument("--batches", type=int, default=100)
  parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(),
                                                          "consensus_jax_bench"))
  args = parser.parse_args()
  cache = pathlib.Path(args.cache_dir)
  data_dir = cache / f"synthetic_{args.rounds}"
  if not (data_dir / "train.jsonl").is_file():
    synthetic.generate_dataset(data_dir, {"train": args.rounds}, seed=0)
  tasks.register_tasks(data_dir, vocab.get_vocabulary(cache / "vocab"), splits=("train",))

  slots_per_batch = BATCH_SIZE * sum(TASK_LENGTHS.values())
  print(f"SFT pipeline, batch {BATCH_SIZE} x {sum(TASK_LENGTHS.values())}, "
        f"{args.batches} batches per run, median of {args.runs} runs; {common.machine_load()}")
  for pack in (True, False):
    results = [_time_run(pack, args.batches) for _ in range(args.runs)]
    seconds = statistics.median(r[0] for r in results)
    examples = statistics.median(r[1] for r in results)
    real = statistics.median(r[2] for r in results)
    slot_rate = slots_per_batch * args.batches / seconds
    print(f"  pack={pack!s:5}  {examples / seconds:8.1f} examples/s  "
          f"{slot_rate:9.0f} tokens/s ({real / seconds:9.0f} non-padding)  "
          f"= {slot_rate / TRAINER_TOKENS_PER_SECOND:5.1f}x a {TRAINER_TOKENS_PER_SECOND:.0f} "
          f"tokens/s train step  [runs: {', '.join(f'{r[0]:.2f}s' for r in results)}]")


if __name__ == "__main__":
  main()
