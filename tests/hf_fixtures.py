"""Random tiny Hugging Face Llama checkpoints, created by the tests with save_pretrained."""
import numpy as np


def save_random_llama(directory, *, num_heads=4, num_kv_heads=4, rope_theta=10000.0,
                      tie=False, vocab=97, hidden=64, layers=2, mlp=96, seed=0):
  import torch
  import transformers

  torch.manual_seed(seed)
  hf_config = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
      num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, rope_theta=rope_theta,
      tie_word_embeddings=tie, rms_norm_eps=1e-6, max_position_embeddings=128)
  model = transformers.LlamaForCausalLM(hf_config).eval()
  # Random init leaves norms at 1; perturb them so a mis-mapped norm weight cannot pass.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(directory)
  return model


def hf_logits(model, tokens_BL: np.ndarray) -> np.ndarray:
  import torch

  with torch.no_grad():
    return model(torch.from_numpy(np.asarray(tokens_BL))).logits.numpy()
