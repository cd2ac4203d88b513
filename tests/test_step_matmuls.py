"""benchmarks.step_matmuls: the train step's matmul inventory, checked against the model's params
and the attention's query blocks, and the program that runs it (no timing)."""
import dataclasses

import numpy as np
import pytest

from benchmarks import step_matmuls
from consensus_jax.models import flops
from consensus_jax.models import params as params_lib
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=96, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=48, max_seq_len=64, attention_query_block=0)


def _norm_scales(config):
  return (2 * config.num_layers + 1) * config.d_model


def test_projections_cover_every_matmul_param():
  inventory = sum(p.inputs * p.outputs * p.count for p in step_matmuls.projections(CONFIG))
  assert inventory + _norm_scales(CONFIG) == flops.matmul_params(CONFIG)
  assert flops.matmul_params(CONFIG) == (params_lib.count_params(CONFIG)
                                         - CONFIG.vocab_size * CONFIG.d_model)


def test_without_blocks_the_flops_are_the_mfu_formula_less_the_norm_scales():
  batch, seq = 3, 40
  expected = (flops.train_flops_per_token(CONFIG, seq) - 6 * _norm_scales(CONFIG)) * batch * seq
  assert step_matmuls.matmul_flops(CONFIG, batch, seq) == pytest.approx(expected, rel=1e-12)


def test_query_blocks_count_only_the_keys_each_block_sees():
  blocked = dataclasses.replace(CONFIG, attention_query_block=16)
  assert step_matmuls.query_blocks(blocked, 40) == [(16, 16), (16, 32), (8, 40)]
  assert step_matmuls.query_blocks(CONFIG, 40) == [(40, 40)]
  full = step_matmuls.matmul_flops(CONFIG, 2, 40)
  saved = full - step_matmuls.matmul_flops(blocked, 2, 40)
  # Of the 40 x 40 scores per head, the blocks skip 40 * 40 - (16*16 + 16*32 + 8*40) = 512.
  per_score = 6 * 2.0 * 2 * CONFIG.num_heads * CONFIG.resolved_head_dim * CONFIG.num_layers
  assert saved == pytest.approx(512 * per_score, rel=1e-12)


def test_products_are_the_step_matmuls_at_its_shapes():
  blocked = dataclasses.replace(CONFIG, attention_query_block=16)
  batch, seq = 2, 40
  weights, attention = step_matmuls.operands(blocked, batch, seq)
  got = step_matmuls.products(weights, attention)
  projections = step_matmuls.projections(blocked)
  blocks = step_matmuls.query_blocks(blocked, seq)
  assert len(got) == 3 * sum(p.count for p in projections) + 6 * blocked.num_layers * len(blocks)
  x, w, dy = (np.asarray(a) for a in weights[-1])  # the logits projection
  assert got[3 * len(weights) - 3].shape == (batch * seq, blocked.vocab_size)
  np.testing.assert_allclose(got[3 * len(weights) - 2], dy @ w.T, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got[3 * len(weights) - 1], x.T @ dy, rtol=1e-4, atol=1e-6)
  last = attention[-1]
  q, k = blocks[-1]
  assert got[-1].shape == (batch, blocked.num_heads, k, blocked.resolved_head_dim)
  np.testing.assert_allclose(got[-1], np.einsum("bhqk,bhqd->bhkd", last["d_scores"], last["q"]),
                             rtol=1e-4, atol=1e-6)
  # Different operands for every product, so the compiled program cannot merge any two.
  flat = [id(a) for pair in weights for a in pair]
  assert len(set(flat)) == len(flat)


def test_program_compiles_and_runs():
  step_matmuls.program(dataclasses.replace(CONFIG, attention_query_block=16), 2, 40)()


def test_torch_program_computes_the_same_products():
  config = dataclasses.replace(CONFIG, attention_query_block=16)
  weights, attention = step_matmuls.operands(config, 2, 40)
  ours = step_matmuls.products(weights, attention)
  theirs = step_matmuls.torch_program(config, 2, 40)()
  assert len(theirs) == len(ours)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-4, atol=1e-5)
