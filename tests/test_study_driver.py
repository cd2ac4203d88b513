"""The studies end to end on random tiny models: every study writes its json, markdown and PNGs
with the documented structure, on the groups it was given."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax import consensus, decoding, reward_scoring, serving
from consensus_jax.data import prompts, synthetic, vocab
from consensus_jax.models import decoder, reward
from consensus_jax.models.config import DecoderConfig
from consensus_jax.studies import driver, runner, systems

CONFIG = DecoderConfig(vocab_size=1000, num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                       mlp_dim=48, max_seq_len=768)
GROUPS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  data_dir = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(data_dir, {"iid_test": GROUPS, "ood_test": GROUPS}, seed=2)
  vocabulary = vocab.get_vocabulary(tmp_path_factory.mktemp("vocab"), vocab_size=1000)
  init = lambda module, seed: nn.meta.unbox(jax.jit(module.init)(
      jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"])
  rm_params = init(reward.RewardModel(CONFIG), 1)
  rm_params["score_kernel"] = jax.random.normal(jax.random.key(2), (CONFIG.d_model,))
  cfg = consensus.ConsensusConfig(
      sampler=decoding.SamplerConfig(max_new_tokens=12, num_samples=4, eos_id=1,
                                     prompt_buckets=(384, 640, 756)),
      statement_head_ids=prompts.rm_statement_head_ids(vocabulary))
  consensus_runner = serving.ConsensusRunner(CONFIG, init(decoder.Decoder(CONFIG), 0), CONFIG,
                                             rm_params, vocabulary, cfg,
                                             rm_prefix_length=128, rm_candidate_length=24)
  scorer = reward_scoring.Scorer(CONFIG, rm_params, vocabulary, reward_scoring.Lengths(128, 24))
  return data_dir, runner.StudyPipeline(consensus_runner, scorer, groups_per_batch=2)


def _run(setup, tmp_path, study, **kw):
  data_dir, pipeline = setup
  return driver.run_study(study=study, data_dir=str(data_dir), output_dir=str(tmp_path),
                          policy_dir="unused", rm_dir="unused", policy_config=CONFIG,
                          rm_config=CONFIG, vocab_dir="unused", sampler=None,
                          pipeline=pipeline, **kw)


def test_head_to_head_writes_the_documented_report(setup, tmp_path, capsys):
  results = _run(setup, tmp_path, "head_to_head", print_examples=1)
  written = json.loads((tmp_path / "head_to_head.json").read_text())
  for split in ("iid_test", "ood_test"):
    result = written[split]
    assert set(result) >= {"systems", "win_rate", "win_rate_ci", "mean_agreement",
                           "worst_member_agreement", "groups", "robustness"}
    assert result["systems"] == list(systems.SYSTEMS) and result["groups"] == GROUPS
    for a in result["systems"]:
      for b in result["systems"]:
        if a != b:  # a tie counts half to each side
          assert result["win_rate"][a][b] + result["win_rate"][b][a] == pytest.approx(1.0)
          low, high = result["win_rate_ci"][a][b]
          assert low <= result["win_rate"][a][b] <= high
    assert "perturbed_population" in result["robustness"]
    assert result["rm_ranking_of_samples"]["pairs"] > 0
    assert (tmp_path / f"head_to_head_{split}_win_rates.png").stat().st_size > 1000
    assert (tmp_path / f"head_to_head_{split}_agreement.png").stat().st_size > 1000
  assert results["ood_test"]["groups"] == GROUPS
  assert "rm_utilitarian" in (tmp_path / "head_to_head.md").read_text()
  printed = capsys.readouterr().out
  assert "CONSENSUS (rm_utilitarian)" in printed and "head-to-head on ood_test" in printed


def test_exclusion_and_welfare_studies_write_their_reports(setup, tmp_path):
  excluded = _run(setup, tmp_path, "exclusion", splits=("ood_test",))
  assert excluded["ood_test"]["groups"] == GROUPS
  assert set(excluded["ood_test"]["effect"]) >= {"mean", "ci_low", "ci_high", "p_value"}
  assert (tmp_path / "exclusion.png").is_file() and (tmp_path / "exclusion.md").is_file()
  rules = _run(setup, tmp_path, "welfare", splits=("iid_test",))["iid_test"]
  assert rules["groups"] == GROUPS and "rawlsian" in rules["per_rule"]
  assert (tmp_path / "welfare.png").is_file()
  assert json.loads((tmp_path / "welfare.json").read_text())["iid_test"]["rules"] == rules["rules"]


def test_a_group_whose_prompt_does_not_fit_is_skipped_and_reported(setup, tmp_path):
  data_dir, pipeline = setup
  lines = (data_dir / "ood_test.jsonl").read_text().splitlines()
  long_round = json.loads(lines[1])
  long_round["opinions"][0]["text"] += " And I mean it." * 300
  short_dir = tmp_path / "data"
  short_dir.mkdir()
  (short_dir / "ood_test.jsonl").write_text(
      "\n".join([lines[0], json.dumps(long_round), *lines[2:]]) + "\n")
  results = driver.run_study(study="exclusion", data_dir=str(short_dir),
                             output_dir=str(tmp_path), policy_dir="unused", rm_dir="unused",
                             policy_config=CONFIG, rm_config=CONFIG, vocab_dir="unused",
                             sampler=None, pipeline=pipeline, splits=("ood_test",))
  assert results["ood_test"]["groups"] == GROUPS - 1
  assert results["ood_test"]["skipped_long_prompt"] == [long_round["id"]]
  assert "1 groups skipped" in (tmp_path / "exclusion.md").read_text()
  assert json.loads((tmp_path / "exclusion.json").read_text())["ood_test"][
      "skipped_long_prompt"] == [long_round["id"]]


def test_a_left_out_member_is_never_seen_by_the_policy_or_the_rm(setup):
  data_dir, pipeline = setup
  from consensus_jax.data import records
  rounds = records.read_jsonl(data_dir / "ood_test.jsonl")
  outputs = pipeline.run(rounds, left_out=[0] * len(rounds), score_opinions=False)
  for round_, out in zip(rounds, outputs):
    assert out.rm_samples_NM.shape[1] == len(round_.opinions) - 1
  groups = pipeline._groups(rounds, [0] * len(rounds))
  assert all(round_.opinions[0].text not in g.opinions for round_, g in zip(rounds, groups))


def test_unknown_study_is_named(setup, tmp_path):
  with pytest.raises(ValueError, match="study='voting'"):
    _run(setup, tmp_path, "voting")
