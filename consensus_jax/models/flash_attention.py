"""Blockwise (flash) attention for TPU: JAX's Pallas TPU kernel, run per shard under shard_map.

`DecoderConfig.attention_kind = 'flash'` selects it for full-sequence passes (training, eval,
scoring without branches): keys and values stream through VMEM in blocks with an online softmax,
so neither the [B, H, L, L] scores nor their gradient is ever materialised (at sequence 4096 that
is what decides whether a 70B train step fits per-chip HBM). The default 'softmax'
(softmax_attention.py) is tuned for CPU, where Pallas TPU kernels do not run (tests run this one
in Pallas's TPU interpret mode and compare it with 'softmax').

Masking: causal, and a token sees only its own packed segment (segment ids; padding is segment
0 and sees only padding, whose outputs no loss reads). Grouped-query attention repeats each
key/value head for its G query heads (the kernel takes equal head counts); that copy is
[B, H, L, D], small next to the scores it replaces.
"""
import jax
import jax.numpy as jnp

from consensus_jax import partitioning

_BLOCK_SIZES = (512, 256, 128)  # The kernel's key blocks are whole multiples of 128 lanes.


def supports(length: int) -> bool:
  """Whether the kernel takes this sequence length (layers fall back to softmax otherwise)."""
  return length % _BLOCK_SIZES[-1] == 0


def _block(length: int) -> int:
  return next(size for size in _BLOCK_SIZES if length % size == 0)


def _kernel(q_BHLD, k_BHLD, v_BHLD, segment_ids_BL):
  from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash

  block = _block(q_BHLD.shape[2])
  sizes = pallas_flash.BlockSizes(
      block_q=block, block_k_major=block, block_k=block, block_b=1,
      block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block, block_q_dkv=block,
      block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
  segments = pallas_flash.SegmentIds(q=segment_ids_BL, kv=segment_ids_BL)
  return pallas_flash.flash_attention(q_BHLD, k_BHLD, v_BHLD, segment_ids=segments,
                                      causal=True, sm_scale=1.0, block_sizes=sizes)


def attention(q_BLHD: jax.Array, k_BKLD: jax.Array, v_BKLD: jax.Array,
              segment_ids_BL: jax.Array) -> jax.Array:
  """Causal, segment-masked attention; q already scaled. Returns out_BLHD."""
  groups = q_BLHD.shape[2] // k_BKLD.shape[1]
  q_BHLD = q_BLHD.transpose(0, 2, 1, 3)
  k_BHLD = jnp.repeat(k_BKLD, groups, axis=1)
  v_BHLD = jnp.repeat(v_BKLD, groups, axis=1)
  segment_ids_BL = segment_ids_BL.astype(jnp.int32)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    out_BHLD = _kernel(q_BHLD, k_BHLD, v_BHLD, segment_ids_BL)
  else:
    # A Pallas kernel is opaque to the partitioner: run it on each device's block of the batch
    # and heads (the split the rule table gives those activations).
    heads_spec = partitioning.logical_to_mesh_spec(
        ("activation_batch", "activation_heads", None, None), q_BHLD.shape, mesh)
    segments_spec = partitioning.logical_to_mesh_spec(
        ("activation_batch", None), segment_ids_BL.shape, mesh)
    out_BHLD = jax.shard_map(_kernel, mesh=mesh,
                             in_specs=(heads_spec, heads_spec, heads_spec, segments_spec),
                             out_specs=heads_spec, check_vma=False)(
                                 q_BHLD, k_BHLD, v_BHLD, segment_ids_BL)
  return out_BHLD.transpose(0, 2, 1, 3)
