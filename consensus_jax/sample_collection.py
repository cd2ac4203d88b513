"""The paper's data loop: the policy's samples for training groups, rated by the groups' members.

For the first `max_groups` rounds of DATA_DIR's training split, the SFT policy samples
`num_samples` statements per group (the framing serving uses, serving.policy_prompt_batch) and
the round's simulated members rate them (data.rated_samples); the rounds are written to
OUTPUT_DIR/train.jsonl with the samples as extra candidates (provenance "policy"), later rounds
unchanged, and the other splits copied as they are, so OUTPUT_DIR is a DATA_DIR the reward model
trains on as before. Test splits are never sampled or rated here: the studies judge them.
Called by `python -m consensus_jax.collect --gin_file=gin_configs/runs/collect.gin ...`.
"""
import itertools
import pathlib
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Optional

import gin
import jax
import numpy as np
from absl import logging

from consensus_jax import atomic_io, decoding, partitioning, programs, serving
from consensus_jax.data import groups as groups_lib
from consensus_jax.data import rated_samples, records, vocab
from consensus_jax.data.errors import DataError


class CollectionError(ValueError):
  """A collection run that cannot start: bad directories or bindings."""


def rated_rounds(rounds: Sequence[records.Round], sample_fn, vocabulary, policy_config,
                 sampler: decoding.SamplerConfig, *, groups_per_batch: int, seed: int,
                 stats: dict) -> Iterator[records.Round]:
  """`rounds` with the policy's samples added and rated; `sample_fn(tokens_BP, lengths_B, rng)`
  returns decoding.Samples. Rounds whose prompt fits no bucket pass through unchanged."""
  rng = jax.random.key(seed)
  fitting = [r for r in rounds if serving.prompt_fits(
      vocabulary, r.question.text, [o.text for o in r.opinions], policy_config, sampler)]
  stats["skipped_long_prompt"] = len(rounds) - len(fitting)
  augmented = {}
  for start in range(0, len(fitting), groups_per_batch):
    batch = fitting[start:start + groups_per_batch]
    rng, batch_rng = jax.random.split(rng)
    tokens_BP, lengths_B = serving.policy_prompt_batch(
        vocabulary, groups_lib.read_groups_from_rounds(batch), policy_config, sampler)
    samples = jax.device_get(sample_fn(tokens_BP, lengths_B, batch_rng))
    texts = serving.candidate_texts(vocabulary, np.asarray(samples.tokens_BNT),
                                      np.asarray(samples.lengths_BN), sampler.eos_id)
    for round_, round_texts in zip(batch, texts):
      augmented[round_.id] = rated_samples.with_rated_samples(round_, round_texts, seed)
    logging.log_every_n_seconds(logging.INFO, "sampled %d of %d groups", 30,
                                start + len(batch), len(fitting))
  for round_ in rounds:
    yield augmented.get(round_.id, round_)


def summary(original: Sequence[records.Round], augmented: Sequence[records.Round]) -> dict:
  """Mean rating of the data's own candidates and of the added samples, over the same rounds."""
  by_id = {r.id: r for r in augmented}
  old, new, added = [], [], 0
  for round_ in original:
    after = by_id[round_.id]
    old_ids = set(round_.candidate_ids)
    for ratings in after.agreement.values():
      for candidate_id, rating in ratings.items():
        (old if candidate_id in old_ids else new).append(rating)
    added += len(after.candidates) - len(round_.candidates)
  return {"groups": len(original), "samples_added": added,
          "mean_rating_data_candidates": float(np.mean(old)) if old else None,
          "mean_rating_policy_samples": float(np.mean(new)) if new else None}


@gin.configurable
def collect_rated_samples(data_dir: str = gin.REQUIRED, output_dir: str = gin.REQUIRED,
                          policy_dir: str = gin.REQUIRED, policy_config=gin.REQUIRED,
                          vocab_dir: str = gin.REQUIRED, vocab_size: int = 8000,
                          sampler: decoding.SamplerConfig = gin.REQUIRED,
                          split: str = "train", max_groups: Optional[int] = None,
                          groups_per_batch: int = 8, seed: int = 0,
                          copy_splits: Sequence[str] = ("iid_test", "ood_test")) -> dict:
  """Writes OUTPUT_DIR/<split>.jsonl (rounds with rated policy samples) and copies
  `copy_splits`; returns the summary it prints."""
  data_dir, output_dir = pathlib.Path(data_dir), pathlib.Path(output_dir)
  source = data_dir / f"{split}.jsonl"
  if not source.is_file():
    raise CollectionError(f"collect_rated_samples.data_dir: no {source}")
  if output_dir.resolve() == data_dir.resolve():
    raise CollectionError(f"collect_rated_samples.output_dir: {output_dir} is DATA_DIR; "
                          "write the rated samples to a new directory")
  atomic_io.check_writable_dir(output_dir, "collect_rated_samples.output_dir (OUTPUT_DIR)")
  for other in copy_splits:
    if not (data_dir / f"{other}.jsonl").is_file():
      raise CollectionError(f"collect_rated_samples.copy_splits: no {data_dir / other}.jsonl")
  rounds = records.read_jsonl(source)
  sampled = rounds[:max_groups] if max_groups is not None else rounds
  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size)
  mesh = partitioning.make_mesh()
  params, step = serving.load_params(policy_dir, policy_config, mesh)
  serving_config, params = serving.serve_policy(policy_config, params, sampler, mesh)
  sample = programs.sampler(serving_config, sampler, mesh)

  def sample_fn(tokens_BP, lengths_B, rng):
    return sample.run_on_host_batch((params,), (tokens_BP, lengths_B), (rng,))
  started = time.time()
  stats: dict = {}
  augmented = list(rated_rounds(
      sampled, sample_fn, vocabulary,
      policy_config, sampler, groups_per_batch=groups_per_batch, seed=seed, stats=stats))
  try:
    records.write_jsonl(output_dir / f"{split}.jsonl",
                        itertools.chain(augmented, rounds[len(sampled):]))
  except DataError as e:
    raise DataError(f"collect_rated_samples: {e}") from e
  for other in copy_splits:
    shutil.copyfile(data_dir / f"{other}.jsonl", output_dir / f"{other}.jsonl")
  result = {"policy_checkpoint_step": step, "seconds": round(time.time() - started, 1),
            **stats, **summary(sampled, augmented)}
  print(f"collect: {result}")
  return result
