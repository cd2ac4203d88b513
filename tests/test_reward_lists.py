"""RM lists: one member prefix with several candidates on branches scores each candidate exactly
as it scores alone after the prefix, and the listwise loss trains on every pair of the list."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from consensus_jax.data import examples, feature_converters, prompts, records, synthetic
from consensus_jax.data import tasks, vocab
from consensus_jax.models import reward
from consensus_jax.models.config import DecoderConfig
from consensus_jax.objectives.reward import RewardObjective

CONFIG = DecoderConfig(vocab_size=1000, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                       mlp_dim=96, max_seq_len=512, scan_layers=False)
LENGTHS = {"inputs": 96, "targets": 320}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  data_dir = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(data_dir, {"train": 3, "iid_test": 1, "ood_test": 1}, seed=3)
  vocabulary = vocab.get_vocabulary(tmp_path_factory.mktemp("vocab"), vocab_size=1000)
  tasks.register_tasks(data_dir, vocabulary, candidates_per_list=4)
  params = reward.RewardModel(CONFIG).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  params = jax.tree_util.tree_map(lambda x: x, params["params"])
  params["score_kernel"] = jax.random.normal(jax.random.key(1), (CONFIG.d_model,))
  return data_dir, vocabulary, params


def _rows(pack):
  ds = seqio.get_dataset(tasks.RM_LISTS_TASK, LENGTHS,
                         feature_converters.RMListFeatureConverter(pack=pack),
                         dataset_split="train", shuffle=False)
  return list(itertools.islice(ds.as_numpy_iterator(), 4))


@pytest.mark.parametrize("pack", [False, True])
def test_each_branch_scores_as_its_candidate_alone(setup, pack):
  data_dir, vocabulary, params = setup
  rows = _rows(pack)
  lists = list(itertools.islice(examples.list_examples(
      records.iter_jsonl(data_dir / "train.jsonl"), candidates_per_list=4), 16))
  model = reward.RewardModel(CONFIG)
  batch = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}
  score_BL = model.apply({"params": params}, batch["decoder_input_tokens"],
                         batch["decoder_positions"], batch["decoder_segment_ids"],
                         batch["decoder_branch_ids"])
  checked = 0
  example_index = 0
  for b, row in enumerate(rows):
    for segment in range(1, row["decoder_segment_ids"].max() + 1):
      example = lists[example_index]
      example_index += 1
      prefix = prompts.rm_prefix_ids(vocabulary, example["inputs"], LENGTHS["inputs"])
      scored = np.flatnonzero((row["score_weights"] > 0) & (row["decoder_segment_ids"] == segment))
      assert 0 < len(scored) <= len(example["candidates"])
      for k, position in enumerate(scored):
        alone = prefix + prompts.rm_candidate_ids(
            vocabulary, example["candidates"][k].removeprefix("Statement: "))
        expected = model.apply({"params": params}, jnp.asarray([alone]))[0, -1]
        assert row["score_targets"][position] == pytest.approx(example["labels"][k])
        np.testing.assert_allclose(float(score_BL[b, position]), float(expected), atol=1e-4)
        checked += 1
  assert checked >= 8


def test_without_branches_later_candidates_would_see_earlier_ones(setup):
  """The branch ids matter: dropping them changes the scores of every candidate but the first."""
  _, _, params = setup
  row = _rows(False)[0]
  model = reward.RewardModel(CONFIG)
  args = [jnp.asarray(row[k])[None] for k in ("decoder_input_tokens", "decoder_positions",
                                              "decoder_segment_ids")]
  branches = jnp.asarray(row["decoder_branch_ids"])[None]
  with_branches = model.apply({"params": params}, *args, branches)
  without = model.apply({"params": params}, *args)
  scored = np.flatnonzero(row["score_weights"])
  assert float(jnp.abs(with_branches[0, scored[0]] - without[0, scored[0]])) < 1e-5
  assert float(jnp.max(jnp.abs(with_branches[0, scored[1:]] - without[0, scored[1:]]))) > 1e-3


def test_listwise_loss_counts_every_differently_rated_pair():
  score_BL = jnp.array([[0.0, 2.0, 0.0, 1.0, -1.0, 0.0]])
  targets_BL = jnp.array([[0.0, 1.0, 0.0, 0.5, 0.5, 0.0]])
  weights_BL = jnp.array([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0]])
  segments_BL = jnp.array([[1, 1, 1, 1, 1, 0]])
  loss, pairs, right = reward.within_list_pairs(score_BL, targets_BL, weights_BL, segments_BL)
  # Pairs: (1 > 3) margin 1, (1 > 4) margin 3; 3 and 4 tie and give no pair.
  assert float(pairs) == 2 and float(right) == 2
  expected = np.log1p(np.exp(-1.0)) + np.log1p(np.exp(-3.0))
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  objective = RewardObjective(CONFIG, loss_kind="listwise")
  assert isinstance(objective.make_feature_converter(pack=True),
                    feature_converters.RMListFeatureConverter)
