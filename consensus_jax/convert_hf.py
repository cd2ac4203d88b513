r"""Converts a Hugging Face Llama directory into a params-only orbax checkpoint.

    python -m consensus_jax.convert_hf --hf_dir=/path/to/llama --output_dir=/tmp/llama_ckpt

Writes <output_dir>/params (the checkpoint; start a run from it with
--gin.train.init_params_from="'<output_dir>/params'", or a reward model's backbone with
--gin.RewardObjective.backbone_from=...) and <output_dir>/model.gin (the DecoderConfig bindings
of the converted model, to pass as a --gin_file). The params are read shard by shard onto every
device of this host (FSDP), so the host never holds the whole model in memory at once.
"""
import dataclasses
import pathlib

from absl import app
from absl import flags

flags.DEFINE_string("hf_dir", None, "Hugging Face checkpoint directory (config.json + safetensors).")
flags.DEFINE_string("output_dir", None, "Where to write params/ and model.gin.")
flags.DEFINE_bool("unrolled", False, "Write unrolled layers (layers_0 ...) instead of scanned.")
FLAGS = flags.FLAGS


def config_gin(config) -> str:
  lines = ["# Written by consensus_jax.convert_hf.",
           "from consensus_jax.models import config", ""]
  for field in dataclasses.fields(config):
    lines.append(f"DecoderConfig.{field.name} = {getattr(config, field.name)!r}")
  return "\n".join(lines) + "\n"


def convert(hf_dir: str, output_dir: str, unrolled: bool = False) -> pathlib.Path:
  from consensus_jax import atomic_io, checkpointing, partitioning
  from consensus_jax.models import hf_import, param_layout

  # FSDP over every device: each host reads only the blocks its devices hold.
  mesh = partitioning.make_mesh(data=1, fsdp=-1, tensor=1)
  config, params = hf_import.from_hf(hf_dir, mesh)
  if unrolled:
    config = config.replace(scan_layers=False)
    params = param_layout.scanned_to_unrolled(params, config.num_layers)
  output = pathlib.Path(output_dir)
  output.mkdir(parents=True, exist_ok=True)
  checkpointing.save_params(output / "params", params)
  atomic_io.write_text(output / "model.gin", config_gin(config))
  return output


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.hf_dir or not FLAGS.output_dir:
    raise app.UsageError("--hf_dir and --output_dir are required")
  output = convert(FLAGS.hf_dir, FLAGS.output_dir, FLAGS.unrolled)
  print(f"wrote {output / 'params'} and {output / 'model.gin'}")


if __name__ == "__main__":
  app.run(main)
