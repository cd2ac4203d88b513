"""Our decoder against transformers.LlamaForCausalLM, and Hugging Face import/export."""
import json
import struct

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
      [sys.executable, "-m", "consensus_jax.convert_hf", f"--hf_dir={tmp_path / 'hf'}",
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


# --- Hostile files: every claim of a header is checked against the file before use ---------


def _raw_safetensors(path, header: dict, data: bytes, header_len=None):
  header_bytes = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(header_bytes) if header_len is None else header_len))
    f.write(header_bytes)
    f.write(data)
  return path


def _entry(dtype="F32", shape=(2, 2), begin=0, end=16):
  return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


@pytest.mark.parametrize("header,data,header_len,message", [
    ({"w": _entry()}, bytes(16), 2**62, r"header length 4611686018427387904 exceeds the file"),
    ({"w": _entry()}, bytes(9), None, r"tensor 'w': data_offsets \[0, 16\] fall outside the 9"),
    ({"a": _entry(), "b": _entry(begin=8, end=24)}, bytes(24), None,
     r"tensors 'a' and 'b' overlap"),
    ({"w": _entry(shape=(3, 2))}, bytes(16), None, r"16 bytes for a F32 tensor of shape \[3, 2\]"),
    ({"w": _entry(dtype="F8_E4M3", end=4)}, bytes(4), None, r"unsupported dtype 'F8_E4M3'"),
    ({"w": _entry(shape=(-1, 4))}, bytes(16), None, r"shape \[-1, 4\] is not a list"),
    ({"w": {"dtype": "F32", "shape": [4]}}, bytes(16), None, r"data_offsets None"),
    (["not", "an", "object"], b"", None, r"the header is not a JSON object"),
])
def test_a_safetensors_header_is_not_trusted(tmp_path, header, data, header_len, message):
  path = _raw_safetensors(tmp_path / "x.safetensors", header, data, header_len)
  with pytest.raises(safetensors_io.SafetensorsError, match=message):
    safetensors_io.SafetensorsShard(path)


def test_valid_raw_file_reads_its_tensors(tmp_path):
  values = np.arange(6, dtype=np.float32)
  path = _raw_safetensors(tmp_path / "x.safetensors",
                          {"a": _entry(shape=(2,), end=8), "b": _entry(shape=(4,), begin=8,
                                                                        end=24)},
                          values.tobytes() + bytes(0))
  shard = safetensors_io.SafetensorsShard(path)
  np.testing.assert_array_equal(shard.read("b"), [2, 3, 4, 5])


def test_integer_weights_and_bad_configs_are_named(tmp_path):
  hf_fixtures.save_random_llama(tmp_path / "hf")
  name = "model.norm.weight"
  _rewrite(tmp_path / "hf", tmp_path / "int", lambda t: None)
  shard = safetensors_io.SafetensorsShard(tmp_path / "int" / "model.safetensors")
  tensors = {n: shard.read(n) for n in shard.names()}
  header, offset, blobs = {}, 0, []
  for n, array in tensors.items():
    blob = (array.astype(np.int32) if n == name else array).tobytes()
    header[n] = _entry("I32" if n == name else "F32", array.shape, offset, offset + len(blob))
    offset += len(blob)
    blobs.append(blob)
  _raw_safetensors(tmp_path / "int" / "model.safetensors", header, b"".join(blobs))
  with pytest.raises(hf_import.CheckpointError, match=rf"tensor {name} is I32"):
    hf_import.from_hf(tmp_path / "int")

  config_path = tmp_path / "hf" / "config.json"
  good = json.loads(config_path.read_text())
  for edit, message in [
      (lambda c: c.pop("hidden_size"), r"required field 'hidden_size' is missing"),
      (lambda c: c.__setitem__("num_hidden_layers", "2"), r"num_hidden_layers must be an integer"),
      (lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}),
       r"rope_scaling rope type 'linear' is not supported"),
  ]:
    config = dict(good)
    edit(config)
    config_path.write_text(json.dumps(config))
    with pytest.raises(hf_import.CheckpointError, match=message):
      hf_import.from_hf(tmp_path / "hf")
  config_path.write_text('{"hidden_size": 64,\n "vocab')
  with pytest.raises(hf_import.CheckpointError, match=r"config.json:2: malformed JSON"):
    hf_import.from_hf(tmp_path / "hf")


def test_import_onto_a_mesh_reads_each_shard_on_its_own(tmp_path, monkeypatch):
  """from_hf(path, mesh): the same params, created on the mesh with the rule table's shardings,
  each device's block read on its own (no host-side copy of a whole stacked tensor)."""
  import jax

  from consensus_jax import partitioning
  from consensus_jax.models import params as params_lib

  hf_fixtures.save_random_llama(tmp_path / "hf", num_heads=4, num_kv_heads=2, hidden=64,
                                mlp=96, layers=2)
  config, host = hf_import.from_hf(tmp_path / "hf")
  mesh = partitioning.make_mesh(data=1, fsdp=4, tensor=2)
  largest_block = {"elements": 0}
  real_stack = np.stack

  def watched_stack(arrays, *args, **kwargs):
    out = real_stack(arrays, *args, **kwargs)
    largest_block["elements"] = max(largest_block["elements"], out.size)
    return out

  monkeypatch.setattr(hf_import.np, "stack", watched_stack)
  _, sharded = hf_import.from_hf(tmp_path / "hf", mesh)
  expected = params_lib.param_shardings(config, mesh)
  for (path, got), want, sharding in zip(
      jax.tree_util.tree_flatten_with_path(sharded)[0], jax.tree_util.tree_leaves(host),
      jax.tree_util.tree_leaves(expected), strict=True):
    assert got.sharding == sharding, path
    np.testing.assert_array_equal(np.asarray(got), want)
  wi_gate = sharded["layers"]["mlp"]["wi_gate"]
  assert wi_gate.sharding.shard_shape(wi_gate.shape) == (2, 16, 48)  # embed / 4, mlp / 2
  # The largest block read at once is one device's shard of a stacked tensor, not the tensor.
  assert largest_block["elements"] <= max(
      np.prod(x.sharding.shard_shape(x.shape)) for x in jax.tree_util.tree_leaves(sharded))
  assert largest_block["elements"] < host["layers"]["mlp"]["wi_gate"].size
