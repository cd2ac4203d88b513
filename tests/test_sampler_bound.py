"""benchmarks.sampler's memory-bandwidth bound: the bytes a sampler run must read, checked
against the params of the serving layout and the sampler's cache chunks (no timing)."""
import jax
import numpy as np

from benchmarks import sampler
from consensus_jax import decoding, partitioning, serving
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig


def test_bytes_read_counts_the_serving_weights_per_step_and_only_the_chunks_a_step_reads():
  config = DecoderConfig(vocab_size=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                         mlp_dim=48, max_seq_len=128)
  mesh = partitioning.single_device_mesh()
  host = jax.device_get(params_lib.init_params(config, mesh, jax.random.key(0)))
  prompts, samples, new_tokens = np.ones((2, 8), np.int32), 3, 10
  cfg = decoding.SamplerConfig(max_new_tokens=new_tokens, num_samples=samples, cache_chunk=4)
  _, served = serving.serve_policy(config, host, cfg, mesh)
  served_bytes = sum(x.nbytes for x in jax.tree.leaves(served))
  rows = 2 * samples
  got = sampler.bytes_read(config, host, prompts, samples, new_tokens, cache_chunk=4)
  # The prefill and every step read every weight, but of the embedding table only the rows
  # they look up.
  table = 64 * 32 * 4
  assert got["weights"] == (new_tokens + 1) * (served_bytes - table + rows * 32 * 4)
  per_slot = 2 * 2 * 2 * 8 * 4  # keys and values x layers x kv heads x head_dim, float32
  assert got["prompt cache"] == new_tokens * 2 * 8 * per_slot
  # Steps 0-3 read chunk 0 (4 slots), steps 4-7 chunks 0-1 (8), steps 8-9 all 10 slots.
  assert got["sample cache"] == (4 * 4 + 4 * 8 + 2 * 10) * rows * per_slot
  # One chunk: every step reads all the slots.
  one_chunk = sampler.bytes_read(config, host, prompts, samples, new_tokens, cache_chunk=0)
  assert one_chunk["sample cache"] == new_tokens * new_tokens * rows * per_slot
