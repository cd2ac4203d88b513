"""The reward model through the shared train loop and the train / eval binaries."""
import functools
import json
import os
import pathlib
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

from consensus_jax import input_pipeline, optimizers, partitioning, trainer
from consensus_jax.data import records, synthetic
from consensus_jax.models.config import DecoderConfig
from consensus_jax.objectives.reward import RewardObjective
from consensus_jax.objectives.sft import SFTObjective

REPO = pathlib.Path(__file__).resolve().parent.parent
VOCAB_SIZE = 1000
CONFIG = DecoderConfig(vocab_size=VOCAB_SIZE, num_layers=2, d_model=64, num_heads=4,
                       num_kv_heads=2, mlp_dim=128, max_seq_len=192)


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  root = tmp_path_factory.mktemp("rm_data")
  synthetic.generate_dataset(root / "rounds", {"train": 30, "iid_test": 4, "ood_test": 3},
                             seed=11)
  return root


@pytest.fixture
def registered(data):
  input_pipeline.register_synthetic_tasks(str(data / "rounds"), str(data / "vocab"),
                                          vocab_size=VOCAB_SIZE)
  gin.clear_config()
  yield data
  gin.clear_config()


def _train(model_dir, objective, task, lengths, steps, **kw):
  return trainer.train(
      model_dir=str(model_dir), objective=objective,
      train_input=input_pipeline.InputConfig(task=task, task_feature_lengths=lengths,
                                             batch_size=8, split="train", shuffle=True),
      total_steps=steps, mesh=partitioning.make_mesh(data=2, fsdp=2, tensor=2),
      make_schedule=functools.partial(optimizers.make_schedule, peak_learning_rate=1e-2,
                                      warmup_steps=1, decay="constant"),
      checkpoint_every_steps=steps, log_every_steps=1, peak_flops_per_device=1e10, **kw)


@pytest.mark.parametrize("loss_kind, task, lengths", [
    ("regression", "consensus_rm_synthetic_ratings", {"inputs": 96, "targets": 48}),
    ("bradley_terry", "consensus_rm_synthetic_pairwise",
     {"inputs": 96, "chosen": 48, "rejected": 48}),
])
def test_reward_objectives_train_on_the_mesh(tmp_path, registered, loss_kind, task, lengths):
  result = _train(tmp_path / loss_kind, RewardObjective(CONFIG, loss_kind=loss_kind), task,
                  lengths, steps=8)
  losses = [result.step_losses[step] for step in sorted(result.step_losses)]
  assert len(losses) == 8 and all(np.isfinite(losses))
  if loss_kind == "bradley_terry":
    # The head starts at zero: every margin is 0, so the first loss is exactly log 2.
    assert losses[0] == pytest.approx(np.log(2.0), abs=1e-6)
  else:
    # A fresh head predicts 0.5 for every rating; the loss must fall from there.
    assert np.mean(losses[-3:]) < losses[0]
  head = result.state.params["score_kernel"]
  assert float(np.abs(np.asarray(head)).max()) > 0


def test_backbone_starts_from_an_sft_checkpoint(tmp_path, registered):
  sft = _train(tmp_path / "sft", SFTObjective(CONFIG), "consensus_sft_synthetic",
               {"inputs": 96, "targets": 32}, steps=1)
  sft_step_dir = tmp_path / "sft" / "checkpoints" / "1"
  objective = RewardObjective(CONFIG, backbone_from=str(sft_step_dir))
  params = objective.init_params(partitioning.make_mesh(data=2, tensor=4), jax.random.key(3))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
      objective.abstract_params())
  sft_backbone = {name: sft.state.params[name] for name in params["backbone"]}
  assert "unembed" in sft.state.params and "unembed" not in params["backbone"]
  for ours, theirs in zip(jax.tree_util.tree_leaves(params["backbone"]),
                          jax.tree_util.tree_leaves(sft_backbone), strict=True):
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
  assert float(np.abs(np.asarray(params["score_kernel"])).max()) == 0.0


def test_unknown_loss_kind_is_named():
  with pytest.raises(ValueError, match="loss_kind='hinge'"):
    RewardObjective(CONFIG, loss_kind="hinge")


def _env():
  env = dict(os.environ)
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="3")
  return env


def test_train_then_eval_binaries_write_metrics(tmp_path, data, shared_data_dir):
  model_dir = tmp_path / "rm"
  common = [f"--gin_file=tests/testdata/trainer_tiny_model.gin",
            f"--gin.MODEL_DIR='{model_dir}'", f"--gin.DATA_DIR='{data / 'rounds'}'",
            f"--gin.VOCAB_DIR='{data / 'vocab'}'", "--gin.VOCAB_SIZE=1000",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 96, 'targets': 48}"]
  train = subprocess.run(
      [sys.executable, "-m", "consensus_jax.train", "--gin_file=gin_configs/runs/reward.gin",
       *common, "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert train.returncode == 0, train.stderr[-3000:]
  evaluate = subprocess.run(
      [sys.executable, "-m", "consensus_jax.eval", "--gin_file=gin_configs/runs/reward_eval.gin",
       *common, f"--gin.POLIS_DIR='{shared_data_dir / 'polis'}'",
       "--gin.evaluate_reward_model.polis_conversations=['scoop-hivemind.freshwater']",
       "--gin.evaluate_reward_model.polis_max_votes=64"],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  report = json.loads((model_dir / "eval" / "reward_metrics.json").read_text())
  assert report["checkpoint_step"] == 2
  results = report["results"]
  for split in ("iid_test", "ood_test"):
    rounds = records.read_jsonl(data / "rounds" / f"{split}.jsonl")
    expected = sum(len(ratings) for r in rounds for ratings in r.agreement.values())
    predictors = {k.rsplit("/", 1)[1]: v for k, v in results.items()
                  if k.startswith(f"synthetic/{split}/")}
    # The RM and every reference are scored on the same rated rows.
    for name in ("reward_model", "bag_of_words", "other_members", "simulator_ceiling"):
      assert predictors[name]["rows"] == expected, name
      assert predictors[name]["pairs"] == predictors["reward_model"]["pairs"], name
    # The simulator's ceiling orders a member's candidates far better than chance.
    assert predictors["simulator_ceiling"]["pairwise_accuracy"] > 0.8
  polis = results["polis/scoop-hivemind.freshwater"]
  # Held-out members until 64 votes are in; the RM beside every peer on the same votes.
  assert 64 <= polis["votes"] < 64 + 80
  assert 0.5 < polis["auc_statement_agree_rate"] <= 1.0  # The baseline carries signal.
  assert {"auc_reward_model", "auc_neighbours", "auc_text_similarity"} <= set(polis)
  report_md = (model_dir / "eval" / "reward_metrics.md").read_text()
  assert "| synthetic/iid_test/reward_model |" in report_md
  assert "| synthetic/ood_test/bag_of_words |" in report_md
  assert "synthetic/ood_test/simulator_ceiling" in evaluate.stdout


_FRUITS = ("apples", "pears", "plums", "grapes", "cherries", "lemons")


def _planted_round(i: int, rng: np.random.Generator) -> records.Round:
  """Each member likes one fruit; they rate a statement choosing it 7, any other 2."""
  question = records.Question("q", "Which fruit should the school serve?", 0, "train",
                              "The school should serve fruit.",
                              "The school should NOT serve fruit.")
  likes = rng.choice(_FRUITS, 3, replace=False)
  opinions = tuple(records.Opinion(f"p{m}", f"I think the school should serve {f}.")
                   for m, f in enumerate(likes))
  candidates = tuple(records.Candidate(f"c{n}", f"We want the school to serve {f}.", "model")
                     for n, f in enumerate(_FRUITS))
  agreement = {f"p{m}": {f"c{n}": 7 if _FRUITS[n] == like else 2 for n in range(len(_FRUITS))}
               for m, like in enumerate(likes)}
  return records.Round(f"planted-{i}", question, opinions, candidates, agreement)


def test_a_short_run_learns_a_planted_member_candidate_signal(tmp_path, data):
  """Which candidate a member prefers depends only on their own opinion, so a model that does
  not read the member scores 0.5 pairwise accuracy; a short listwise run must reach 0.8."""
  from consensus_jax import reward_scoring
  from consensus_jax.studies import rm_report
  from consensus_jax.data import tasks, vocab

  rng = np.random.default_rng(0)
  train_rounds = [_planted_round(i, rng) for i in range(200)]
  test_rounds = [_planted_round(1000 + i, rng) for i in range(12)]
  vocabulary = vocab.get_vocabulary(data / "vocab", vocab_size=VOCAB_SIZE)
  tasks.register_tasks(lambda split: iter(train_rounds), vocabulary, splits=("train",),
                       candidates_per_list=6)
  gin.clear_config()
  objective = RewardObjective(CONFIG, loss_kind="listwise")
  result = _train(tmp_path / "planted", objective, "consensus_rm_synthetic_lists",
                  {"inputs": 48, "targets": 96}, steps=150)
  scorer = reward_scoring.Scorer(CONFIG, jax.device_get(result.state.params), vocabulary,
                          reward_scoring.Lengths(48, 24))
  metrics = rm_report.evaluate_rounds(scorer, test_rounds)
  assert metrics["reward_model"]["pairwise_accuracy"] > 0.8
  assert metrics["reward_model"]["across_member_pearson"] > 0.5  # it tells members apart
  assert metrics["other_members"]["pairwise_accuracy"] < 0.6  # popularity cannot
