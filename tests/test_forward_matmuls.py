"""benchmarks.forward_matmuls: the forward pass's weight matmuls, all of them at their shapes and
none dropped by the compiler (no timing)."""
import re

import numpy as np
import pytest

from benchmarks import forward_matmuls, step_matmuls
from consensus_jax.models import flops
from consensus_jax.models.config import DecoderConfig

CONFIG = DecoderConfig(vocab_size=96, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                       mlp_dim=48, max_seq_len=64, attention_query_block=0)


def test_flops_are_a_third_of_the_train_steps_weight_matmuls():
  rows = 40
  weights_only = step_matmuls.matmul_flops(CONFIG, 1, rows) - CONFIG.num_layers * sum(
      6 * 2.0 * CONFIG.num_heads * q * k * CONFIG.resolved_head_dim
      for q, k in step_matmuls.query_blocks(CONFIG, rows))
  assert 3 * forward_matmuls.forward_flops(CONFIG, rows) == pytest.approx(weights_only)
  logits = 2.0 * rows * CONFIG.d_model * CONFIG.vocab_size
  assert forward_matmuls.forward_flops(CONFIG, rows, steps=5, logits=False) == pytest.approx(
      5 * (forward_matmuls.forward_flops(CONFIG, rows) - logits))
  # Against the model's own count: every matmul parameter but the norm scales.
  norm_scales = (2 * CONFIG.num_layers + 1) * CONFIG.d_model
  assert forward_matmuls.forward_flops(CONFIG, 1) == 2.0 * (flops.matmul_params(CONFIG)
                                                            - norm_scales)


def _dot_shapes(hlo_text):
  """(lhs contracting size, output shape) of every dot in the optimised program."""
  return sorted(tuple(int(d) for d in m.group(1).split(","))
                for m in re.finditer(r"= f32\[([\d,]+)\]\{[\d,]+\} dot\(", hlo_text))


@pytest.mark.parametrize("logits,fused", [(True, False), (False, False), (True, True)])
def test_compiled_program_keeps_every_product_inside_its_loop(logits, fused):
  rows, steps = 8, 3
  jitted, args = forward_matmuls.jitted(CONFIG, rows, steps, logits, fused)
  hlo = jitted.lower(*args).compile().as_text()
  d, hd, layers = CONFIG.d_model, CONFIG.resolved_head_dim, CONFIG.num_layers
  q, kv, mlp = CONFIG.num_heads * hd, CONFIG.num_kv_heads * hd, CONFIG.mlp_dim
  if fused:
    projections = [(rows, q + 2 * kv)] * layers + [(rows, 2 * mlp)] * layers
  else:
    projections = ([(rows, q)] * layers + [(rows, kv)] * 2 * layers
                   + [(rows, mlp)] * 2 * layers)
  expected = (projections + [(rows, d)] * 2 * layers
              + ([(rows, CONFIG.vocab_size)] if logits else []))
  assert _dot_shapes(hlo) == sorted(expected)
  assert "while" in hlo  # the steps run in the loop, not hoisted out of it
  out = np.asarray(jitted(*args))
  assert out.shape == (rows, d) and np.all(np.isfinite(out))
  assert not np.allclose(out, np.asarray(args[1]))


def test_program_runs():
  forward_matmuls.program(CONFIG, rows=4, steps=2)()


def test_floor_counts_the_flops_of_the_passes_it_runs():
  passes = (forward_matmuls.Passes(6, fused=True), forward_matmuls.Passes(4, 3, logits=False))
  run, counted = forward_matmuls.floor(CONFIG, *passes)
  assert counted == (forward_matmuls.forward_flops(CONFIG, 6)
                     + forward_matmuls.forward_flops(CONFIG, 4, 3, logits=False))
  assert len(run()) == len(passes)
