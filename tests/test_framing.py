"""One framing owner (data/prompts.py): training examples and the serving path see the same ids.

The decisive check runs a model: the distribution the serving path samples a group's first
statement token from equals the trained model's next-token distribution at the position where a
training example built from the same group predicts its first target token. Any drift in
framing (a missing start token, other separators, a different truncation) changes the context
and fails it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from consensus_jax import consensus, decoding, serving
from consensus_jax.data import (feature_converters, groups as groups_lib, prompts, records,
                                synthetic, tasks, vocab)
from consensus_jax.models import decoder
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=1000, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                       mlp_dim=96, max_seq_len=512, scan_layers=False)
# Long enough that no prompt of these groups is cut (a cut prompt is not the served one).
LENGTHS = {"inputs": 440, "targets": 72}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  data_dir = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(data_dir, {"train": 2, "iid_test": 4, "ood_test": 1}, seed=5)
  vocabulary = vocab.get_vocabulary(tmp_path_factory.mktemp("vocab"), vocab_size=1000)
  tasks.register_tasks(data_dir, vocabulary)
  rounds = [r for r in records.read_jsonl(data_dir / "iid_test.jsonl") if any(r.agreement)]
  params = decoder.Decoder(CONFIG).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  return vocabulary, rounds, params["params"]


def _training_rows():
  ds = seqio.get_dataset(tasks.SFT_TASK, LENGTHS,
                         feature_converters.SFTFeatureConverter(pack=False),
                         dataset_split="iid_test", shuffle=False)
  return list(ds.as_numpy_iterator())


def _serving_first_logits(vocabulary, groups, params, frame=None):
  sampler = decoding.SamplerConfig(max_new_tokens=16, num_samples=2, decode_layout=False,
                                   prompt_buckets=(256, 384, 496))  # 496 + 16 = max_seq_len
  if frame is None:
    tokens_BP, lengths_B = serving.policy_prompt_batch(vocabulary, groups, CONFIG, sampler)
  else:
    tokens_BP, lengths_B = decoding.pad_to_bucket(
        [frame(g) for g in groups], sampler.prompt_buckets, CONFIG.max_seq_len)
  logits_BV, _ = jax.jit(decoding.prefill, static_argnums=(0, 4))(
      CONFIG, params, tokens_BP, lengths_B, sampler)
  return np.asarray(jax.nn.log_softmax(logits_BV, axis=-1))


def test_serving_samples_the_first_token_from_the_trained_distribution(setup):
  vocabulary, rounds, params = setup
  rows = _training_rows()
  assert len(rows) == len(rounds)
  groups = groups_lib.read_groups_from_rounds(rounds)
  serving_BV = _serving_first_logits(vocabulary, groups, params)
  apply = jax.jit(decoder.Decoder(CONFIG).apply)
  for b, row in enumerate(rows):
    first_target = int(np.argmax(row["decoder_loss_weights"]))
    assert first_target < LENGTHS["inputs"]  # the prompt was not cut
    logits_1LV = apply({"params": params}, row["decoder_input_tokens"][None],
                       row["decoder_positions"][None], row["decoder_segment_ids"][None])
    training_V = np.asarray(jax.nn.log_softmax(logits_1LV[0, first_target]))
    np.testing.assert_allclose(serving_BV[b], training_V, atol=2e-4)
    # The serving prompt is the training context up to that position, id for id.
    prompt_ids = prompts.policy_prompt_ids(vocabulary, groups[b].question, groups[b].opinions)
    assert row["decoder_input_tokens"][:first_target + 1].tolist() == prompt_ids


def test_the_check_catches_a_missing_start_token(setup):
  vocabulary, rounds, params = setup
  groups = groups_lib.read_groups_from_rounds(rounds)
  framed = _serving_first_logits(vocabulary, groups, params)
  unframed = _serving_first_logits(vocabulary, groups, params, frame=lambda g: list(
      vocabulary.encode(prompts.sft_prompt(g.question, g.opinions))))
  assert np.max(np.abs(framed - unframed)) > 1e-2


def test_sft_converter_refuses_another_start_token():
  with pytest.raises(ValueError, match="POLICY_START_ID"):
    feature_converters.SFTFeatureConverter(pack=False, bos_id=3)


def test_on_device_candidates_equal_the_rm_task_ids(setup):
  """Statement head + the policy's ids for a statement (+ EOS) = the RM's candidate ids."""
  vocabulary, rounds, _ = setup
  texts = [c.text for r in rounds for c in r.candidates][:24]
  generated = [prompts.policy_target_ids(vocabulary, t) for t in texts]
  width = max(len(g) for g in generated) + 2
  generated_NT = np.zeros((1, len(texts), width), np.int32)
  for n, ids in enumerate(generated):
    generated_NT[0, n, :len(ids)] = ids
  lengths_N = np.array([[len(g) for g in generated]], np.int32)
  tokens_BNC, lengths_BN = consensus.rm_candidates(
      prompts.rm_statement_head_ids(vocabulary), jnp.asarray(generated_NT),
      jnp.asarray(lengths_N), vocabulary.eos_id)
  for n, text in enumerate(texts):
    expected = prompts.rm_candidate_ids(vocabulary, text)
    assert np.asarray(tokens_BNC[0, n, :int(lengths_BN[0, n])]).tolist() == expected


def test_rm_candidate_cut_keeps_its_eos(setup):
  vocabulary, rounds, _ = setup
  ids = prompts.rm_candidate_ids(vocabulary, rounds[0].candidates[0].text, max_length=5)
  assert len(ids) == 5 and ids[-1] == vocabulary.eos_id
