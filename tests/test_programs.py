"""The compiled serving programs on sharded meshes of 8 simulated devices give what one device
gives: the sampler, the RM scorer, the consensus program, the runner and the infer binary."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from consensus_jax import checkpointing, consensus, decoding, partitioning, programs, serving
from consensus_jax.models import decoder, param_layout, reward
from consensus_jax.models.config import DecoderConfig

from tests.conftest import REPO_ROOT, init_params

POLICY = DecoderConfig(vocab_size=40, num_layers=2, d_model=32, num_heads=4, num_kv_heads=4,
                       mlp_dim=48, max_seq_len=64)
RM = DecoderConfig(vocab_size=40, num_layers=1, d_model=32, num_heads=4, num_kv_heads=2,
                   mlp_dim=48, max_seq_len=64)
MESHES = {"data2_tensor4": dict(data=2, fsdp=1, tensor=4),
          "fsdp8": dict(data=1, fsdp=8, tensor=1)}
SAMPLER = decoding.SamplerConfig(max_new_tokens=6, num_samples=3, temperature=1.0, eos_id=1,
                                 cache_chunk=4)
GROUPS = 8


@pytest.fixture(scope="module")
def params():
  rm = init_params(reward.RewardModel(RM), 1)
  rm["score_kernel"] = jax.random.normal(jax.random.key(2), (RM.d_model,))
  return jax.device_get(init_params(decoder.Decoder(POLICY), 0)), jax.device_get(rm)


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  prompts_BP, prompt_lengths_B = decoding.pad_to_bucket(
      [rng.integers(2, 40, rng.integers(2, 9)).tolist() for _ in range(GROUPS)], (8,), 64)
  prefixes_BMQ = rng.integers(2, 40, (GROUPS, 3, 6)).astype(np.int32)
  prefix_lengths_BM = rng.integers(2, 7, (GROUPS, 3)).astype(np.int32)
  mask_BM = np.ones((GROUPS, 3), bool)
  mask_BM[::3, 2] = False
  return prompts_BP, prompt_lengths_B, prefixes_BMQ, prefix_lengths_BM, mask_BM


def _consensus(mesh, params, inputs):
  policy, rm = params
  serving_config, policy = serving.serve_policy(POLICY, policy, SAMPLER, mesh)
  cfg = consensus.ConsensusConfig(sampler=SAMPLER, statement_head_ids=(7, 8), rule="rawlsian")
  out = programs.consensus_program(serving_config, RM, cfg, mesh)(
      policy, jax.device_put(rm, programs.reward_shardings(RM, mesh)), *inputs,
      jax.random.key(3))
  return out


@pytest.fixture(scope="module")
def single_device(params, inputs):
  return jax.device_get(_consensus(partitioning.single_device_mesh(), params, inputs))


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
def test_consensus_program_on_a_sharded_mesh_equals_one_device(params, inputs, single_device,
                                                               mesh_name):
  out = _consensus(partitioning.make_mesh(**MESHES[mesh_name]), params, inputs)
  assert out.utilities_BNM.sharding.num_devices == 8
  assert out.candidate_tokens_BNT.sharding.shard_shape(out.candidate_tokens_BNT.shape)[0] < GROUPS
  out = jax.device_get(out)
  np.testing.assert_array_equal(out.candidate_tokens_BNT, single_device.candidate_tokens_BNT)
  np.testing.assert_array_equal(out.candidate_lengths_BN, single_device.candidate_lengths_BN)
  np.testing.assert_array_equal(out.winner_B, single_device.winner_B)
  np.testing.assert_allclose(out.utilities_BNM, single_device.utilities_BNM, atol=1e-5)
  np.testing.assert_allclose(out.welfare_BN, single_device.welfare_BN, atol=1e-5)


@pytest.mark.parametrize("mesh_name", sorted(MESHES))
def test_rm_scorer_and_sampler_on_a_sharded_mesh_equal_one_device(params, inputs, single_device,
                                                                  mesh_name):
  policy, rm = params
  mesh = partitioning.make_mesh(**MESHES[mesh_name])
  prompts_BP, prompt_lengths_B, prefixes_BMQ, prefix_lengths_BM, _ = inputs
  candidates_BNC = np.asarray(single_device.candidate_tokens_BNT)
  candidate_lengths_BN = np.maximum(np.asarray(single_device.candidate_lengths_BN), 1)
  scored = {}
  for name, where in (("single", partitioning.single_device_mesh()), ("sharded", mesh)):
    scorer = programs.rm_scorer(RM, where, chunk_size=6)
    scored[name] = scorer(jax.device_put(rm, programs.reward_shardings(RM, where)),
                          prefixes_BMQ, prefix_lengths_BM, candidates_BNC, candidate_lengths_BN)
  assert scored["sharded"].sharding.num_devices == 8
  np.testing.assert_allclose(scored["sharded"], scored["single"], atol=1e-5)

  serving_config, served = serving.serve_policy(POLICY, policy, SAMPLER, mesh)
  samples = programs.sampler(serving_config, SAMPLER, mesh)(served, prompts_BP,
                                                            prompt_lengths_B, jax.random.key(3))
  assert samples.tokens_BNT.sharding.num_devices == 8
  np.testing.assert_array_equal(samples.tokens_BNT, single_device.candidate_tokens_BNT)
  np.testing.assert_allclose(samples.logprobs_BN, single_device.candidate_logprobs_BN, atol=1e-4)


def test_params_are_converted_to_the_serving_layout_once_on_the_mesh(params):
  policy, _ = params
  mesh = partitioning.make_mesh(**MESHES["data2_tensor4"])
  serving_config, served = serving.serve_policy(POLICY, policy, SAMPLER, mesh)
  assert serving_config == POLICY.replace(scan_layers=False, fused_projections=True)
  expected_config, expected = param_layout.decode_layout(POLICY, policy)
  assert expected_config == serving_config
  qkv = served["layers_0"]["attention"]["qkv"]
  assert qkv.sharding.spec == programs.policy_shardings(serving_config, mesh)[
      "layers_0"]["attention"]["qkv"].spec
  assert "tensor" in str(qkv.sharding.spec)  # kv heads split over the tensor axis
  for got, want in zip(jax.tree_util.tree_leaves(served), jax.tree_util.tree_leaves(expected),
                       strict=True):
    np.testing.assert_array_equal(got, want)
  # With the decode layout turned off, the checkpoint layout is served as it is.
  plain = decoding.SamplerConfig(decode_layout=False)
  assert programs.to_serving_layout(POLICY, plain, mesh) == (POLICY, None)


def test_batch_padding_fills_the_batch_shards_with_copies_of_a_real_row():
  rows = np.array([[3, 4], [5, 6], [7, 8]], np.int32)
  padded = programs.pad_batch(rows, 4)
  np.testing.assert_array_equal(padded, [[3, 4], [5, 6], [7, 8], [3, 4]])
  assert programs.pad_batch(rows, 3) is rows or np.array_equal(programs.pad_batch(rows, 3), rows)
  np.testing.assert_array_equal(programs.pad_batch(rows, 2, fill=0)[3], [0, 0])
  assert programs.batch_multiple(partitioning.make_mesh(**MESHES["fsdp8"])) == 8
  assert programs.batch_multiple(partitioning.make_mesh(**MESHES["data2_tensor4"])) == 2


def test_compiler_options_follow_the_platform():
  assert programs.compiler_options("cpu")
  assert programs.compiler_options("tpu") == {}


def _write_checkpoint(model_dir, params):
  checkpointing.save_params(model_dir / "checkpoints" / "5", params)


def test_infer_binary_shards_over_the_mesh_its_flags_describe(tmp_path, params, data):
  """`python -m consensus_jax.infer --gin.partitioning.make_mesh.*` restores both models onto
  that mesh and selects what the one-device run selects, for a batch that does not fill the
  batch shards (3 groups on fsdp=8)."""
  del params
  config = POLICY.replace(vocab_size=1000, max_seq_len=256)
  _write_checkpoint(tmp_path / "sft", init_params(decoder.Decoder(config), 0))
  rm = init_params(reward.RewardModel(config), 1)
  rm["score_kernel"] = jax.random.normal(jax.random.key(2), (config.d_model,))
  _write_checkpoint(tmp_path / "rm", rm)
  groups = tmp_path / "groups.jsonl"
  groups.write_text("".join(json.dumps({"id": f"g{i}", "question": "Should cities ban cars?",
                                        "opinions": ["Yes, cars are loud.", "No.", "Maybe."]})
                            + "\n" for i in range(3)))
  model = [f"--gin.config.DecoderConfig.{k}={v}" for k, v in dict(
      vocab_size=1000, num_layers=2, d_model=32, num_heads=4, num_kv_heads=4, mlp_dim=48,
      max_seq_len=256).items()]
  results = {}
  for name, mesh_flags in (("single", []),
                           ("fsdp8", ["--gin.partitioning.make_mesh.data=1",
                                      "--gin.partitioning.make_mesh.fsdp=8"])):
    out_dir = tmp_path / name
    command = [sys.executable, "-m", "consensus_jax.infer",
               "--gin_file=gin_configs/runs/infer.gin", *model,
               f"--gin.POLICY_DIR='{tmp_path / 'sft'}'", f"--gin.RM_DIR='{tmp_path / 'rm'}'",
               f"--gin.INPUT_PATH='{groups}'", f"--gin.OUTPUT_DIR='{out_dir}'",
               f"--gin.VOCAB_DIR='{data.vocab_dir}'", "--gin.VOCAB_SIZE=1000",
               "--gin.NUM_CANDIDATES=3", "--gin.MAX_NEW_TOKENS=6",
               "--gin.RM_LENGTHS={'inputs': 48, 'targets': 16}", *mesh_flags]
    env = dict(os.environ)
    if name == "single":
      env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("device_count=8", "device_count=1")
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results[name] = [json.loads(line) for line in (out_dir / "consensus.jsonl").open()]
  assert [r["id"] for r in results["fsdp8"]] == ["g0", "g1", "g2"]
  for single, sharded in zip(results["single"], results["fsdp8"], strict=True):
    assert sharded["statement"] == single["statement"]
    assert sharded["winner_index"] == single["winner_index"]
    for a, b in zip(single["candidates"], sharded["candidates"], strict=True):
      assert a["text"] == b["text"]
      assert a["predicted_agreement"] == pytest.approx(b["predicted_agreement"], abs=1e-3)
