"""Our decoder against transformers.LlamaForCausalLM, and Hugging Face import/export."""
import json

import numpy as np
import pytest

from consensus_jax.models import decoder, hf_import, param_layout, safetensors_io
from tests import hf_fixtures

CASES = {
    "multi_head": dict(num_heads=4, num_kv_heads=4),
    "grouped_query": dict(num_heads=4, num_kv_heads=2),
    "multi_query_rope_theta": dict(num_heads=4, num_kv_heads=1, rope_theta=500.0),
    "tied_embeddings": dict(num_heads=2, num_kv_heads=2, tie=True),
}


def _tokens(vocab, shape=(2, 24), seed=1):
  return np.random.RandomState(seed).randint(0, vocab, shape)


def _our_logits(config, params, tokens):
  return np.asarray(decoder.Decoder(config).apply({"params": params}, tokens))


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers_and_round_trip(tmp_path, case):
  model = hf_fixtures.save_random_llama(tmp_path / "hf", **CASES[case])
  tokens = _tokens(97)
  reference = hf_fixtures.hf_logits(model, tokens)

  config, params = hf_import.from_hf(tmp_path / "hf")
  assert config.num_kv_heads == CASES[case]["num_kv_heads"]
  assert config.rope_theta == CASES[case].get("rope_theta", 10000.0)
  np.testing.assert_allclose(_our_logits(config, params, tokens), reference, atol=1e-4, rtol=0)

  hf_import.to_hf(config, params, tmp_path / "exported")
  import transformers
  reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "exported").eval()
  np.testing.assert_allclose(hf_fixtures.hf_logits(reloaded, tokens), reference, atol=1e-4,
                             rtol=0)


def test_unrolled_layout_gives_same_logits(tmp_path):
  model = hf_fixtures.save_random_llama(tmp_path / "hf", num_heads=4, num_kv_heads=2)
  config, params = hf_import.from_hf(tmp_path / "hf")
  tokens = _tokens(97)
  unrolled = param_layout.scanned_to_unrolled(params, config.num_layers)
  assert "layers" not in unrolled and "layers_1" in unrolled
  np.testing.assert_allclose(
      _our_logits(config.replace(scan_layers=False), unrolled, tokens),
      hf_fixtures.hf_logits(model, tokens), atol=1e-4, rtol=0)
  hf_import.to_hf(config, unrolled, tmp_path / "from_unrolled")
  _, params_again = hf_import.from_hf(tmp_path / "from_unrolled")
  np.testing.assert_array_equal(params_again["layers"]["mlp"]["wo"],
                                params["layers"]["mlp"]["wo"])


def test_sharded_checkpoint_with_several_files(tmp_path):
  hf_fixtures.save_random_llama(tmp_path / "hf", num_heads=4, num_kv_heads=2)
  config, params = hf_import.from_hf(tmp_path / "hf")
  # Split the single file into two shards, as large checkpoints are stored.
  shard = safetensors_io.SafetensorsShard(tmp_path / "hf" / "model.safetensors")
  names = shard.names()
  split_dir = tmp_path / "split"
  split_dir.mkdir()
  (split_dir / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
  for i, part in enumerate((names[::2], names[1::2])):
    safetensors_io.write(split_dir / f"model-0000{i + 1}-of-00002.safetensors",
                         {n: shard.read(n) for n in part})
  _, params_split = hf_import.from_hf(split_dir)
  np.testing.assert_array_equal(params_split["layers"]["attention"]["key"],
                                params["layers"]["attention"]["key"])


def _rewrite(src, dst, edit):
  shard = safetensors_io.SafetensorsShard(src / "model.safetensors")
  tensors = {n: shard.read(n) for n in shard.names()}
  edit(tensors)
  dst.mkdir()
  safetensors_io.write(dst / "model.safetensors", tensors)
  (dst / "config.json").write_text((src / "config.json").read_text())


def test_missing_tensor_is_named(tmp_path):
  hf_fixtures.save_random_llama(tmp_path / "hf")
  name = "model.layers.1.self_attn.k_proj.weight"
  _rewrite(tmp_path / "hf", tmp_path / "bad", lambda t: t.pop(name))
  with pytest.raises(hf_import.CheckpointError, match=f"{name} is missing"):
    hf_import.from_hf(tmp_path / "bad")


def test_wrong_shape_is_named(tmp_path):
  hf_fixtures.save_random_llama(tmp_path / "hf")
  name = "model.layers.0.mlp.up_proj.weight"
  _rewrite(tmp_path / "hf", tmp_path / "bad",
           lambda t: t.__setitem__(name, np.zeros((95, 64), np.float32)))
  with pytest.raises(hf_import.CheckpointError,
                     match=rf"{name} has shape \(95, 64\), but config.json implies \(96, 64\)"):
    hf_import.from_hf(tmp_path / "bad")


def test_unsupported_config_is_rejected(tmp_path):
  hf_fixtures.save_random_llama(tmp_path / "hf")
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
  (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
  with pytest.raises(hf_import.CheckpointError, match="rope type 'linear'"):
    hf_import.from_hf(tmp_path / "hf")


def test_convert_cli_writes_a_checkpoint_the_trainer_can_load(tmp_path):
  import subprocess
  import sys

  import gin
  import jax

  from consensus_jax import checkpointing
  from consensus_jax.models import params as params_lib
  from consensus_jax.models.config import DecoderConfig

  model = hf_fixtures.save_random_llama(tmp_path / "hf", num_heads=4, num_kv_heads=2)
  result = subprocess.run(
      [sys.executable, "-m", "consensus_jax.models.convert_hf", f"--hf_dir={tmp_path / 'hf'}",
       f"--output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300,
      env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-2000:]
  gin.clear_config()
  gin.parse_config_file(str(tmp_path / "out" / "model.gin"))
  config = DecoderConfig()
  gin.clear_config()
  assert (config.num_kv_heads, config.d_model, config.norm_eps) == (2, 64, 1e-6)
  params = checkpointing.load_params(tmp_path / "out" / "params",
                                     params_lib.abstract_params(config))
  tokens = _tokens(97)
  np.testing.assert_allclose(_our_logits(config, jax.device_get(params), tokens),
                             hf_fixtures.hf_logits(model, tokens), atol=1e-4, rtol=0)
