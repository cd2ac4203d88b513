"""Runs one study on held-out synthetic splits and writes <study>.json, <study>.md and PNGs.

Called by the eval binary (`python -m consensus_jax.eval --gin_file=runs/study_<name>.gin`);
the bindings are those of runs/infer.gin plus DATA_DIR (the synthetic splits) and the study.
"""
import itertools
import json
import pathlib
from collections.abc import Sequence
from typing import Any, Optional

import gin
import numpy as np
from absl import logging

from consensus_jax import atomic_io
from consensus_jax.data import records
from consensus_jax.data.errors import DataError
from consensus_jax.studies import exclusion, head_to_head, judges, plots, systems, welfare_rules

STUDIES = ("head_to_head", "exclusion", "welfare")


def _load_pipeline(policy_dir, rm_dir, policy_config, rm_config, vocab_dir, vocab_size,
                   sampler, rm_lengths, groups_per_batch, seed):
  from consensus_jax import consensus, partitioning, reward_scoring, serving
  from consensus_jax.data import prompts, vocab
  from consensus_jax.studies import runner

  vocabulary = vocab.get_vocabulary(vocab_dir, vocab_size)
  mesh = partitioning.make_mesh()
  policy_params = serving.load_params(policy_dir, policy_config, mesh)[0]
  rm_params = serving.load_reward_model(rm_dir, rm_config, mesh)[0]
  cfg = consensus.ConsensusConfig(sampler=sampler,
                                  statement_head_ids=prompts.rm_statement_head_ids(vocabulary),
                                  rule="utilitarian")
  consensus_runner = serving.ConsensusRunner(
      policy_config, policy_params, rm_config, rm_params, vocabulary, cfg,
      rm_prefix_length=rm_lengths["inputs"], rm_candidate_length=rm_lengths["targets"],
      mesh=mesh)
  scorer = reward_scoring.Scorer(
      rm_config, rm_params, vocabulary,
      reward_scoring.Lengths(rm_lengths["inputs"], rm_lengths["targets"]), mesh=mesh)
  return runner.StudyPipeline(consensus_runner, scorer, groups_per_batch, seed)


def _heatmap_examples(rounds, outputs, judged_samples, count: int = 3):
  examples = []
  for g in range(min(count, len(rounds))):
    examples.append((f"{rounds[g].id}", 1 + 6 * outputs[g].rm_samples_NM.T,
                     judged_samples[g]))
  return examples


def _write(out_dir: pathlib.Path, study: str, results: dict, report: str) -> None:
  atomic_io.write_text(out_dir / f"{study}.json", json.dumps(results, indent=2, default=float))
  atomic_io.write_text(out_dir / f"{study}.md", report)


def study_rounds(data_dir, split: str, max_groups: Optional[int]) -> list[records.Round]:
  path = pathlib.Path(data_dir) / f"{split}.jsonl"
  return list(itertools.islice(records.iter_jsonl(path), max_groups))


@gin.configurable
def run_study(study: str = gin.REQUIRED, data_dir: str = gin.REQUIRED,
              output_dir: str = gin.REQUIRED, policy_dir: str = gin.REQUIRED,
              rm_dir: str = gin.REQUIRED, policy_config=gin.REQUIRED, rm_config=gin.REQUIRED,
              vocab_dir: str = gin.REQUIRED, vocab_size: int = 8000, sampler=gin.REQUIRED,
              splits: Sequence[str] = ("iid_test", "ood_test"), max_groups: Optional[int] = 100,
              rm_lengths: Optional[dict] = None, groups_per_batch: int = 4,
              seed: int = 0, print_examples: int = 0, pipeline: Any = None) -> dict:
  """One study over `splits`; returns {split: result} as written to <output_dir>/<study>.json.

  `pipeline` (a studies.runner.StudyPipeline) replaces loading the models, for callers that
  already hold them (tests). `print_examples` (head_to_head): print that many groups of the
  last split with the chosen statement and every member's predicted and judged agreement.
  """
  if study not in STUDIES:
    raise ValueError(f"run_study: study={study!r} is not one of {STUDIES}")
  out_dir = atomic_io.check_writable_dir(output_dir, "run_study.output_dir (OUTPUT_DIR)")
  rounds_by_split = {split: study_rounds(data_dir, split, max_groups) for split in splits}
  if pipeline is None:
    pipeline = _load_pipeline(policy_dir, rm_dir, policy_config, rm_config, vocab_dir,
                              vocab_size, sampler, rm_lengths or {"inputs": 128, "targets": 96},
                              groups_per_batch, seed)
  skipped = {}
  for split, rounds in rounds_by_split.items():
    fits = [pipeline.fits(r) for r in rounds]
    fitting = [r for r, ok in zip(rounds, fits) if ok]
    skipped[split] = [r.id for r, ok in zip(rounds, fits) if not ok]
    if skipped[split]:
      logging.warning("%s: %d of %d groups skipped, their prompt is longer than the policy's "
                      "context leaves room for: %s", split, len(skipped[split]), len(rounds),
                      ", ".join(skipped[split]))
    if not fitting:
      raise DataError(f"run_study: no group of {split} has a prompt that fits the policy's "
                      "context")
    rounds_by_split[split] = fitting
  results = {}
  if study == "head_to_head":
    for split, rounds in rounds_by_split.items():
      outputs = pipeline.run(rounds)
      results[split], (choices, judged_samples) = head_to_head.run(rounds, outputs, seed=seed)
      plots.win_rate_matrix(results[split], out_dir / f"head_to_head_{split}_win_rates.png",
                            f"{split} ({results[split]['judge']})")
      plots.agreement_heatmaps(_heatmap_examples(rounds, outputs, judged_samples),
                               out_dir / f"head_to_head_{split}_agreement.png")
    report = head_to_head.markdown(results)
    if print_examples:
      print(head_to_head.examples_text(rounds, outputs, choices, judged_samples,
                                       print_examples))
      print(head_to_head.summary_line(split, results[split]))
  elif study == "exclusion":
    for split, rounds in rounds_by_split.items():
      rng = np.random.default_rng(seed)
      left_out = [int(rng.integers(len(r.opinions))) for r in rounds]
      with_all = pipeline.run(rounds, score_opinions=False)
      without = pipeline.run(rounds, left_out=left_out, score_opinions=False, salt=1)
      winner_all_G = systems.sample_winners(with_all, "utilitarian")
      winner_without_G = systems.sample_winners(without, "utilitarian")
      members = max(len(r.opinions) for r in rounds)
      judged_all = np.zeros((len(rounds), members))
      judged_without = np.zeros((len(rounds), members))
      mask = np.zeros((len(rounds), members), bool)
      for g, round_ in enumerate(rounds):
        ratings = judges.PRIMARY.rate(round_, [with_all[g].samples[winner_all_G[g]],
                                               without[g].samples[winner_without_G[g]]])
        m = len(round_.opinions)
        judged_all[g, :m], judged_without[g, :m], mask[g, :m] = ratings[:, 0], ratings[:, 1], True
      results[split] = exclusion.analyse(judged_all, judged_without, np.array(left_out), mask)
    plots.exclusion(results, out_dir / "exclusion.png")
    report = exclusion.markdown(results)
  else:
    for split, rounds in rounds_by_split.items():
      outputs = pipeline.run(rounds, score_opinions=False)
      judged_samples, _ = head_to_head.judged_texts(judges.PRIMARY, rounds, outputs)
      results[split] = welfare_rules.analyse(outputs, judged_samples)
    plots.welfare(results, out_dir / "welfare.png")
    report = welfare_rules.markdown(results)
  for split, ids in skipped.items():
    results[split]["skipped_long_prompt"] = ids
    if ids:
      report += (f"\n{split}: {len(ids)} groups skipped, their prompt is longer than the "
                 f"policy's context leaves room for: {', '.join(ids)}\n")
  _write(out_dir, study, results, report)
  print(report)
  return results
