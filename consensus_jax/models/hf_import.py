"""Hugging Face Llama checkpoints <-> our DecoderConfig and (scanned) param tree.

`from_hf(path[, mesh])` reads config.json plus one or several *.safetensors files; every tensor
is checked against the shape the config implies, and a missing or misshapen tensor is an error
naming it. Given a mesh, the params are created on it shard by shard (each host reads only its
devices' blocks). `to_hf(config, params, path)` writes a directory `transformers` loads with
`LlamaForCausalLM.from_pretrained`. Both accept scanned or unrolled param layouts.
"""
import json
import pathlib
from typing import Any

import jax
import numpy as np

from consensus_jax.models import param_layout, safetensors_io
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig


class CheckpointError(ValueError):
  """A Hugging Face checkpoint that is malformed or does not match what its config promises."""


def _rope(hf_config: dict, where: str) -> dict:
  """The rotary settings, from rope_parameters and/or the older rope_scaling: both are read
  (neither is ignored) and any scaling in either is refused."""
  merged = {}
  for key in ("rope_parameters", "rope_scaling"):
    value = hf_config.get(key)
    if value is None:
      continue
    if not isinstance(value, dict):
      raise CheckpointError(f"{where}: {key} must be an object, got {value!r}")
    kind = value.get("rope_type", value.get("type", "default"))
    if kind != "default":
      raise CheckpointError(f"{where}: {key} rope type {kind!r} is not supported (only "
                            "unscaled rotary embeddings)")
    merged.update(value)
  return merged


def _field(hf_config: dict, key: str, where: str, kind=int, default=None, positive=True):
  value = hf_config.get(key, default)
  if value is None:
    raise CheckpointError(f"{where}: required field {key!r} is missing")
  if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
    raise CheckpointError(f"{where}: {key} must be {'a number' if kind is float else 'an integer'}"
                          f", got {value!r}")
  if positive and value <= 0:
    raise CheckpointError(f"{where}: {key} must be positive, got {value!r}")
  return kind(value)


def config_from_hf(hf_config: dict, where: str = "config.json") -> DecoderConfig:
  if not isinstance(hf_config, dict):
    raise CheckpointError(f"{where}: expected a JSON object")
  if hf_config.get("model_type", "llama") != "llama":
    raise CheckpointError(f"{where}: model_type {hf_config.get('model_type')!r} is not 'llama'")
  for flag in ("attention_bias", "mlp_bias"):
    if hf_config.get(flag):
      raise CheckpointError(f"{where}: {flag}=true is not supported (Llama blocks have no biases)")
  if hf_config.get("hidden_act", "silu") != "silu":
    raise CheckpointError(f"{where}: hidden_act {hf_config['hidden_act']!r} is not 'silu'")
  rope = _rope(hf_config, where)
  theta = _field({"rope_theta": rope.get("rope_theta", hf_config.get("rope_theta", 10000.0))},
                 "rope_theta", where, float)
  num_heads = _field(hf_config, "num_attention_heads", where)
  d_model = _field(hf_config, "hidden_size", where)
  head_dim = hf_config.get("head_dim") or d_model // num_heads
  return DecoderConfig(
      vocab_size=_field(hf_config, "vocab_size", where),
      num_layers=_field(hf_config, "num_hidden_layers", where),
      d_model=d_model,
      num_heads=num_heads,
      num_kv_heads=_field(hf_config, "num_key_value_heads", where, default=num_heads),
      head_dim=_field({"head_dim": head_dim}, "head_dim", where),
      mlp_dim=_field(hf_config, "intermediate_size", where),
      mlp_kind="swiglu",
      rope_theta=theta,
      norm_eps=_field(hf_config, "rms_norm_eps", where, float, default=1e-6),
      tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
      max_seq_len=_field(hf_config, "max_position_embeddings", where, default=2048),
  )


def read_config(config_path: pathlib.Path) -> DecoderConfig:
  """config.json -> DecoderConfig; unreadable JSON is a CheckpointError naming file and line."""
  if not config_path.is_file():
    raise CheckpointError(f"{config_path.parent}: no config.json")
  try:
    hf_config = json.loads(config_path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_path}:{e.lineno}: malformed JSON: {e.msg}") from None
  except (UnicodeDecodeError, RecursionError) as e:
    raise CheckpointError(f"{config_path}: unreadable ({type(e).__name__})") from None
  return config_from_hf(hf_config, where=str(config_path))


def config_to_hf(config: DecoderConfig) -> dict:
  if config.mlp_kind != "swiglu":
    raise CheckpointError(f"to_hf: mlp_kind={config.mlp_kind!r} has no Llama equivalent")
  return {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": config.vocab_size, "hidden_size": config.d_model,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.resolved_head_dim, "hidden_act": "silu",
      "max_position_embeddings": config.max_seq_len, "rms_norm_eps": config.norm_eps,
      "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "default"},
      "tie_word_embeddings": config.tie_embeddings, "attention_bias": False,
      "mlp_bias": False, "bos_token_id": None, "eos_token_id": 1, "pad_token_id": 0,
      "dtype": "float32",
  }


def _layer_tensors(config: DecoderConfig, i: int) -> dict[str, tuple[tuple[str, ...], tuple]]:
  """HF name -> (our path inside one layer, HF shape)."""
  d, f = config.d_model, config.mlp_dim
  q_out, kv_out = config.num_heads * config.resolved_head_dim, (
      config.num_kv_heads * config.resolved_head_dim)
  p = f"model.layers.{i}."
  return {
      p + "self_attn.q_proj.weight": (("attention", "query"), (q_out, d)),
      p + "self_attn.k_proj.weight": (("attention", "key"), (kv_out, d)),
      p + "self_attn.v_proj.weight": (("attention", "value"), (kv_out, d)),
      p + "self_attn.o_proj.weight": (("attention", "out"), (d, q_out)),
      p + "mlp.gate_proj.weight": (("mlp", "wi_gate"), (f, d)),
      p + "mlp.up_proj.weight": (("mlp", "wi_up"), (f, d)),
      p + "mlp.down_proj.weight": (("mlp", "wo"), (d, f)),
      p + "input_layernorm.weight": (("pre_attention_norm", "scale"), (d,)),
      p + "post_attention_layernorm.weight": (("pre_mlp_norm", "scale"), (d,)),
  }


def _hf_to_ours(config: DecoderConfig, leaf: str, w: np.ndarray) -> np.ndarray:
  """HF Linear weights are [out, in]; ours are [in, ...] with heads split out."""
  hd = config.resolved_head_dim
  if leaf in ("query", "key", "value"):
    return w.T.reshape(config.d_model, -1, hd)
  if leaf == "out":
    return w.T.reshape(config.num_heads, hd, config.d_model)
  if leaf in ("wi_gate", "wi_up", "wo"):
    return w.T
  return w


def _ours_to_hf(config: DecoderConfig, leaf: str, w: np.ndarray) -> np.ndarray:
  if leaf in ("query", "key", "value"):
    return w.reshape(config.d_model, -1).T
  if leaf == "out":
    return w.reshape(-1, config.d_model).T
  if leaf in ("wi_gate", "wi_up", "wo"):
    return w.T
  return w


def _checked_view(ckpt, name: str, expected_shape: tuple, directory: pathlib.Path) -> np.ndarray:
  """The tensor as a memory-mapped view (nothing read yet), after checking name, shape, dtype."""
  if name not in ckpt:
    raise CheckpointError(f"{directory}: tensor {name} is missing from the checkpoint")
  if ckpt.shape(name) != tuple(expected_shape):
    raise CheckpointError(f"{ckpt.where(name)}: tensor {name} has shape {ckpt.shape(name)}, "
                          f"but config.json implies {tuple(expected_shape)}")
  if ckpt.dtype(name) not in safetensors_io.FLOAT_DTYPES:
    raise CheckpointError(f"{ckpt.where(name)}: tensor {name} is {ckpt.dtype(name)}; weights "
                          f"must be one of {safetensors_io.FLOAT_DTYPES}")
  return ckpt.read(name)


def _lazy_params(config: DecoderConfig, ckpt, directory: pathlib.Path) -> dict:
  """Our scanned param tree with, at each leaf, (shape, read(index) -> float32 block): every
  tensor checked now, none read until a block of it is asked for. A layer-stacked leaf reads
  only the layers and the part of each that the index selects (views of memory maps: the
  transposes and head reshapes into our layout copy nothing)."""
  v, d = config.vocab_size, config.d_model
  per_layer: dict[tuple[str, str], list] = {}
  for i in range(config.num_layers):
    for name, ((module, leaf), shape) in _layer_tensors(config, i).items():
      view = _hf_to_ours(config, leaf, _checked_view(ckpt, name, shape, directory))
      per_layer.setdefault((module, leaf), []).append(view)

  def stacked(views):
    def read(index):
      index = tuple(index) + (slice(None),) * (1 + views[0].ndim - len(index))
      layers = range(len(views))[index[0]]
      return np.stack([np.asarray(views[i][index[1:]], np.float32) for i in layers])
    return (len(views), *views[0].shape), read

  def single(view):
    return view.shape, lambda index: np.asarray(view[tuple(index)], np.float32)

  params: dict[str, Any] = {
      "embedding": single(_checked_view(ckpt, "model.embed_tokens.weight", (v, d), directory)),
      "final_norm": {"scale": single(_checked_view(ckpt, "model.norm.weight", (d,),
                                                   directory))},
      "layers": {},
  }
  for (module, leaf), views in per_layer.items():
    params["layers"].setdefault(module, {})[leaf] = stacked(views)
  if not config.tie_embeddings:
    params["unembed"] = single(_checked_view(ckpt, "lm_head.weight", (v, d), directory).T)
  return params


def _is_lazy_leaf(x) -> bool:
  return isinstance(x, tuple) and len(x) == 2 and callable(x[1])


def from_hf(path, mesh=None) -> tuple[DecoderConfig, dict]:
  """Reads a HF Llama directory into (config, params) in the scanned layout.

  Without a mesh: host float32 arrays. With a mesh: each param is created on the mesh with its
  sharding from the rule table, and each device's shard is read from the memory-mapped files
  on its own (`jax.make_array_from_callback`): a host holds only what its devices hold, so a
  70B checkpoint converts on a TPU VM host, not only on a machine with 280 GB of memory.
  """
  directory = pathlib.Path(path)
  config = read_config(directory / "config.json")
  try:
    ckpt = safetensors_io.SafetensorsCheckpoint(directory)
  except safetensors_io.SafetensorsError as e:
    raise CheckpointError(str(e)) from None
  expected = set(_all_hf_names(config))
  unused = sorted(n for n in ckpt.names() if n not in expected and "rotary_emb" not in n)
  if unused:
    raise CheckpointError(f"{directory}: tensors not used by a Llama of this config: "
                          f"{unused[:5]}{' ...' if len(unused) > 5 else ''}")
  lazy = _lazy_params(config, ckpt, directory)
  if mesh is None:
    return config, jax.tree_util.tree_map(
        lambda leaf: leaf[1](tuple(slice(None) for _ in leaf[0])), lazy, is_leaf=_is_lazy_leaf)
  shardings = params_lib.param_shardings(config, mesh)
  return config, jax.tree_util.tree_map(
      lambda leaf, sharding: jax.make_array_from_callback(leaf[0], sharding, leaf[1]),
      lazy, shardings, is_leaf=_is_lazy_leaf)


def _all_hf_names(config: DecoderConfig):
  yield from ("model.embed_tokens.weight", "model.norm.weight")
  if not config.tie_embeddings:
    yield "lm_head.weight"
  for i in range(config.num_layers):
    yield from _layer_tensors(config, i)


def to_hf(config: DecoderConfig, params: dict, path) -> None:
  """Writes config.json and model.safetensors (float32) that transformers loads."""
  directory = pathlib.Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  if config.fused_projections:
    raise ValueError("to_hf: fused projection kernels (fused_projections=True) have no Hugging "
                     "Face layout; export the unfused params")
  if "layers" not in params:
    params = param_layout.unrolled_to_scanned(params, config.num_layers)
  tensors = {"model.embed_tokens.weight": np.asarray(params["embedding"], np.float32),
             "model.norm.weight": np.asarray(params["final_norm"]["scale"], np.float32)}
  if not config.tie_embeddings:
    tensors["lm_head.weight"] = np.asarray(params["unembed"], np.float32).T
  for i in range(config.num_layers):
    for name, ((module, leaf), _) in _layer_tensors(config, i).items():
      w = np.asarray(params["layers"][module][leaf][i], np.float32)
      tensors[name] = _ours_to_hf(config, leaf, w)
  safetensors_io.write(directory / "model.safetensors", tensors)
  (directory / "config.json").write_text(json.dumps(config_to_hf(config), indent=2))
