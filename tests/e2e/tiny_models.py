"""Random tiny Hugging Face checkpoints written as (sharded) safetensors folders."""

from __future__ import annotations

import torch


def tiny_hf_model(arch: str, seed: int = 0):
    """Returns a random Hugging Face model of the given family: 'llama' (GQA, llama3 rope
    scaling), 'qwen2' (qkv bias, tied embeddings), 'qwen3' (q/k norm, tied)."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common, rope_theta=10000.0, rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=64))
        model = tf.LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1000000.0)
        model = tf.Qwen2ForCausalLM(cfg)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0)
        model = tf.Qwen3ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    # HF's default init (std 0.02) gives near-uniform logits where greedy ties are common;
    # a wider init makes the argmax well separated so the comparison tests the model.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5 if "embed" in name else 1.0 / p.shape[1] ** 0.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


def write_checkpoint(model, folder: str) -> str:
    model.save_pretrained(folder, max_shard_size="100KB", safe_serialization=True)
    return folder


def no_eos_greedy(n: int):
    """Greedy for exactly n tokens, EOS not special: what ignore_eos=True does for us.
    (min_new_tokens would instead forbid EOS, changing the argmax.)"""
    import transformers

    return transformers.GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)


def hf_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    """Exactly n greedy tokens from an HF model, EOS not special, by a plain forward loop
    over HF's own KV cache (generate() would fill in EOS from the model's own config)."""
    import torch

    out: list[int] = []
    dev = model.device
    with torch.no_grad():
        res = model(torch.tensor([prompt_ids], device=dev), use_cache=True)
        for _ in range(n):
            tok = int(res.logits[0, -1].argmax())
            out.append(tok)
            res = model(torch.tensor([[tok]], device=dev), past_key_values=res.past_key_values, use_cache=True)
    return out
