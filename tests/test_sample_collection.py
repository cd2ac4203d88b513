"""The paper's data loop: policy samples for training rounds, rated by the rounds' own members,
written as a DATA_DIR the reward model trains on."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax import checkpointing, decoding, sample_collection
from consensus_jax.data import (examples, population, prompts, question_bank, rated_samples,
                                records, synthetic, vocab)
from consensus_jax.models import decoder
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=1000, num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                       mlp_dim=48, max_seq_len=768)


def _round(seed=0):
  question = question_bank.load_questions()[0]
  return synthetic.generate_round(question, f"train-{seed}", np.random.default_rng(seed),
                                  group_size=4)


def test_samples_are_rated_by_the_rounds_own_members(shared_data_dir):
  del shared_data_dir
  round_ = _round()
  texts = ["We think the question is hard and we agree on little.", "",
           round_.candidates[0].text, "We think the question is hard and we agree on little.",
           "banana banana banana"]
  after = rated_samples.with_rated_samples(round_, texts, seed=3)
  added = after.candidates[len(round_.candidates):]
  # The empty text, the copy of an existing candidate and the repeat are skipped.
  assert [c.text for c in added] == [texts[0], texts[4]]
  assert all(c.provenance == "policy" for c in added)
  # Exactly the simulator's rating of those texts by these members, with the round's noise.
  members = synthetic.members_from_round(round_)
  expected_MS, _ = population.rate(round_.question, members, [texts[0], texts[4]],
                                   rated_samples.rater_rng(round_.id, 3))
  for m, pid in enumerate(round_.participant_ids):
    assert [after.agreement[pid][c.id] for c in added] == expected_MS[m].tolist()
    # The data's own ratings are kept as they were.
    assert {k: v for k, v in after.agreement[pid].items()
            if k in round_.candidate_ids} == dict(round_.agreement[pid])
    # The ranking is the ratings' order, ties in one tier.
    flat = [(tier_rank, c) for tier_rank, tier in enumerate(after.rankings[pid]) for c in tier]
    assert sorted(c for _, c in flat) == sorted(after.candidate_ids)
    by_rank = [after.agreement[pid][c] for _, c in flat]
    assert by_rank == sorted(by_rank, reverse=True)
  # Off-topic word salad rates lower than the group's own best candidate for every member.
  best = round_.best_candidate_id()
  assert all(after.agreement[pid][added[1].id] < after.agreement[pid][best]
             for pid in round_.participant_ids)
  # Valid as a record, and deterministic in (seed, round id).
  assert records.round_from_dict(records.round_to_dict(after)) == after
  assert rated_samples.with_rated_samples(round_, texts, seed=3) == after
  assert rated_samples.with_rated_samples(round_, [], seed=3) is round_


def test_a_round_without_simulated_members_is_refused(shared_data_dir):
  del shared_data_dir
  round_ = _round()
  bare = records.Round(round_.id, round_.question, round_.opinions, round_.candidates,
                       round_.agreement)
  with pytest.raises(ValueError, match="no simulated members"):
    rated_samples.with_rated_samples(bare, ["We agree."])


@pytest.fixture(scope="module")
def collected(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  data_dir = tmp_path_factory.mktemp("data")
  synthetic.generate_dataset(data_dir, {"train": 5, "iid_test": 2, "ood_test": 2}, seed=4)
  vocab_dir = tmp_path_factory.mktemp("vocab")
  vocab.get_vocabulary(vocab_dir, vocab_size=1000)
  params = nn.meta.unbox(jax.jit(decoder.Decoder(CONFIG).init)(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  policy_dir = tmp_path_factory.mktemp("policy")
  checkpointing.save_params(policy_dir / "checkpoints" / "0", params)
  out_dir = tmp_path_factory.mktemp("rated") / "data"
  sampler = decoding.SamplerConfig(max_new_tokens=10, num_samples=3, eos_id=1,
                                   prompt_buckets=(384, 640, 756))
  kwargs = dict(data_dir=str(data_dir), policy_dir=str(policy_dir), policy_config=CONFIG,
                vocab_dir=str(vocab_dir), vocab_size=1000, sampler=sampler, groups_per_batch=2)
  result = sample_collection.collect_rated_samples(output_dir=str(out_dir), max_groups=3,
                                                   **kwargs)
  return data_dir, out_dir, result, kwargs


def test_collection_writes_a_data_dir_with_rated_policy_samples(collected):
  data_dir, out_dir, result, _ = collected
  before = records.read_jsonl(data_dir / "train.jsonl")
  after = records.read_jsonl(out_dir / "train.jsonl")
  assert [r.id for r in after] == [r.id for r in before]
  for old, new in zip(before[:3], after[:3]):
    added = new.candidates[len(old.candidates):]
    assert new.candidates[:len(old.candidates)] == old.candidates
    assert 1 <= len(added) <= 3 and all(c.provenance == "policy" for c in added)
    assert all(set(new.agreement[pid]) == set(new.candidate_ids) for pid in new.participant_ids)
  assert after[3:] == before[3:]  # beyond max_groups: unchanged
  for split in ("iid_test", "ood_test"):  # never sampled: copied as they are
    assert (out_dir / f"{split}.jsonl").read_bytes() == (data_dir / f"{split}.jsonl").read_bytes()
  added = sum(len(a.candidates) - len(b.candidates) for a, b in zip(after, before))
  assert result["samples_added"] == added and result["groups"] == 3
  assert result["policy_checkpoint_step"] == 0 and result["skipped_long_prompt"] == 0
  # The listwise reward-model examples now carry the policy's samples with their ratings.
  lists = list(examples.list_examples(after[:1], candidates_per_list=64))
  policy_texts = {prompts.rm_suffix(c.text) for c in after[0].candidates
                  if c.provenance == "policy"}
  assert lists and all(policy_texts <= set(example["candidates"]) for example in lists)
  json.dumps(result)


def test_collection_refuses_to_overwrite_its_source_or_miss_a_split(collected, tmp_path):
  data_dir, _, _, kwargs = collected
  with pytest.raises(sample_collection.CollectionError, match="is DATA_DIR"):
    sample_collection.collect_rated_samples(output_dir=str(data_dir), **kwargs)
  with pytest.raises(sample_collection.CollectionError, match="copy_splits.*nope"):
    sample_collection.collect_rated_samples(output_dir=str(tmp_path / "o"),
                                            copy_splits=("nope",), **kwargs)
  with pytest.raises(sample_collection.CollectionError, match="data_dir: no"):
    sample_collection.collect_rated_samples(**{**kwargs, "data_dir": str(tmp_path)},
                                            output_dir=str(tmp_path / "o"))
