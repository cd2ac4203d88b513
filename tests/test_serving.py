"""Groups in, consensus out: input validation and the runner around the compiled program."""
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from consensus_jax import consensus, decoding, serving
from consensus_jax.data import errors, groups as groups_lib, prompts, vocab
from consensus_jax.models import decoder, reward
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=1000, num_layers=1, d_model=32, num_heads=2, num_kv_heads=1,
                       mlp_dim=48, max_seq_len=320)


def _write(tmp_path, lines):
  path = tmp_path / "groups.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return path


GOOD = json.dumps({"id": "g1", "question": "Should cities ban cars?",
                   "opinions": ["Yes, cars pollute the air.", "No, people need to drive."]})


@pytest.mark.parametrize("line, message", [
    (json.dumps({"id": "g2", "question": "Q?", "opinions": ["only me"]}),
     r"groups.jsonl:2: group 'g2' has 1 opinion\(s\); a consensus needs at least two"),
    (json.dumps({"id": "g2", "question": "Q?", "opinions": ["fine", "  "]}),
     r"groups.jsonl:2: group 'g2': opinion 2 is empty"),
    ('{"id": "g2", "question": ', r"groups.jsonl:2: malformed JSON"),
    (json.dumps({"id": "g2", "opinions": ["a", "b"]}), r"groups.jsonl:2: missing field 'question'"),
    # Nulls and numbers are not read as the text "None" / "3".
    (json.dumps({"id": "g2", "question": None, "opinions": ["a", "b"]}),
     r"groups.jsonl:2: group 'g2': 'question' must be a string, got None"),
    (json.dumps({"id": None, "question": "Q?", "opinions": ["a", "b"]}),
     r"groups.jsonl:2: 'id' must be a non-empty string or an integer, got None"),
    (json.dumps({"id": "g2", "question": "Q?", "opinions": ["a", 3]}),
     r"groups.jsonl:2: group 'g2': opinion 2 must be a string, got 3"),
    (json.dumps({"id": "g1", "question": "Q?", "opinions": ["a", "b"]}),
     r"groups.jsonl:2: duplicate group id 'g1' \(first on line 1\)"),
    ('{"id": "g2", "question": "Q\\ud800?", "opinions": ["a", "b"]}',
     r"groups.jsonl:2: a string holds a lone UTF-16 surrogate"),
    ("[" * 100000 + "]" * 100000, r"groups.jsonl:2: JSON nested too deeply"),
])
def test_bad_groups_name_file_and_line(tmp_path, line, message):
  with pytest.raises(errors.DataError, match=message):
    groups_lib.read_groups(_write(tmp_path, [GOOD, line]))


def test_bytes_that_are_not_utf8_are_named(tmp_path):
  path = tmp_path / "groups.jsonl"
  path.write_bytes(GOOD.encode() + b"\n" + b'{"id": "g2", "question": "Q\xff?"}\n')
  with pytest.raises(errors.DataError, match=r"groups.jsonl:2: not UTF-8 text \(byte 28 "):
    groups_lib.read_groups(path)


def test_infer_checks_output_dir_and_every_prompt_before_loading_models(tmp_path, runner):
  from consensus_jax import serving_job

  vocab_dir = tmp_path / "vocab"
  vocab_dir.mkdir()
  kwargs = dict(policy_dir=str(tmp_path / "no_policy"), rm_dir=str(tmp_path / "no_rm"),
                policy_config=CONFIG, rm_config=CONFIG, vocab_dir=str(vocab_dir),
                vocab_size=1000, sampler=runner.cfg.sampler)
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(OSError, match=r"infer.output_dir \(OUTPUT_DIR\): cannot write into"):
    serving_job.infer(input_path=str(tmp_path / "missing.jsonl"), output_dir=str(blocker / "out"),
                **kwargs)
  long_opinion = " ".join(["transport policy matters to everyone here"] * 80)
  path = _write(tmp_path, [GOOD, json.dumps({"id": "too-long", "question": "Q?",
                                             "opinions": [long_opinion, "No."]})])
  # The vocabulary is the runner's (saved there by the fixture); no model is ever read.
  for file in pathlib.Path(runner.vocabulary.sentencepiece_model_file).parent.iterdir():
    (vocab_dir / file.name).write_bytes(file.read_bytes())
  with pytest.raises(errors.DataError, match=r"group 'too-long': its prompt is \d+ tokens"):
    serving_job.infer(input_path=str(path), output_dir=str(tmp_path / "out"), **kwargs)
  assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="module")
def runner(tmp_path_factory, shared_data_dir):
  del shared_data_dir
  vocabulary = vocab.get_vocabulary(tmp_path_factory.mktemp("vocab"), vocab_size=1000)
  init = lambda module, seed: nn.meta.unbox(jax.jit(module.init)(
      jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"])
  rm_params = init(reward.RewardModel(CONFIG), 1)
  rm_params["score_kernel"] = jax.random.normal(jax.random.key(2), (CONFIG.d_model,))
  head = prompts.rm_statement_head_ids(vocabulary)
  cfg = consensus.ConsensusConfig(
      sampler=decoding.SamplerConfig(max_new_tokens=8, num_samples=3, eos_id=1,
                                     prompt_buckets=(64, 128, 512)),
      statement_head_ids=head, rule="rawlsian")
  return serving.ConsensusRunner(CONFIG, init(decoder.Decoder(CONFIG), 0), CONFIG, rm_params,
                                 vocabulary, cfg, rm_prefix_length=48, rm_candidate_length=16)


def test_runner_returns_the_winner_with_every_members_agreement(tmp_path, runner):
  groups = groups_lib.read_groups(_write(tmp_path, [GOOD, json.dumps(
      {"id": "g2", "question": "Should school start later?",
       "opinions": [{"participant_id": "ann", "text": "Teenagers need sleep."},
                    {"participant_id": "bo", "text": "Parents work early."},
                    {"participant_id": "cy", "text": "Buses are already booked."}]})]))
  results = runner.run(groups, jax.random.key(0))
  assert [r["id"] for r in results] == ["g1", "g2"]
  for result, group in zip(results, groups):
    assert len(result["candidates"]) == 3
    winner = result["candidates"][result["winner_index"]]
    assert result["statement"] == winner["text"]
    valid = [c for c in result["candidates"] if c["valid"]]
    if valid:
      assert winner["welfare"] == max(c["welfare"] for c in valid)
      # Rawlsian welfare is the least satisfied member's utility.
      assert winner["welfare"] == pytest.approx(
          (min(winner["predicted_agreement"].values()) - 1) / 6, abs=1e-3)
    for c in result["candidates"]:
      assert list(c["predicted_agreement"]) == list(group.participant_ids)
      assert all(1.0 <= v <= 7.0 for v in c["predicted_agreement"].values())
  assert "* chosen" in serving.agreement_table(results[1])


def test_prompt_longer_than_the_context_is_an_error_naming_the_group(tmp_path, runner):
  long_opinion = " ".join(["transport policy matters to everyone here"] * 80)
  groups = groups_lib.read_groups(_write(tmp_path, [json.dumps(
      {"id": "too-long", "question": "Should cities ban cars?",
       "opinions": [long_opinion, "No."]})]))
  with pytest.raises(errors.DataError, match=r"group 'too-long': its prompt is \d+ tokens, "
                                             r"longer than the largest usable prompt bucket 128"):
    runner.run(groups, jax.random.key(0))
