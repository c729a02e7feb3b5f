"""A Hugging Face transformers model on *our* weights, sharing their storage.

Our Llama/Qwen modules fuse q/k/v into `qkv_proj` and gate/up into `gate_up_proj`; Hugging
Face keeps them apart. The HF model is built on the meta device and its parameters are
assigned row-slices (views) of our fused tensors, so:
- both engines run bit-identical weights (dummy, GGUF-dequantized or safetensors);
- no second copy is allocated (an 8B model fits twice on one GPU only this way);
- the HF model must not outlive our model's tensors (it holds views of them).

Non-persistent buffers (rotary `inv_freq`) are not in a state dict, so the rotary module is
rebuilt on the device after assignment.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from titaninfer.config import ModelConfig

_MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama",
                "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}


def hf_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """Our ModelConfig back to a transformers config (kwargs of AutoConfig.for_model)."""
    model_type = _MODEL_TYPES.get(cfg.architecture)
    if model_type is None:
        raise ValueError(f"the hf engine does not know architecture {cfg.architecture!r}")
    d: dict[str, Any] = dict(
        model_type=model_type, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
        rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=cfg.bos_token_id, eos_token_id=list(cfg.eos_token_ids) or None,
    )
    if model_type == "llama":
        d["attention_bias"] = cfg.attention_bias
    rs = cfg.rope_scaling
    if rs.rope_type != "default":
        d["rope_scaling"] = dict(rope_type=rs.rope_type, factor=rs.factor, low_freq_factor=rs.low_freq_factor,
                                 high_freq_factor=rs.high_freq_factor,
                                 original_max_position_embeddings=rs.original_max_position_embeddings)
    return d


def hf_state_dict(model: nn.Module, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our parameters under Hugging Face names; fused tensors split into row views."""
    q, kv, inter = cfg.q_size, cfg.kv_size, cfg.intermediate_size
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        t = p.detach()
        if name == "lm_head.weight":
            if not cfg.tie_word_embeddings:
                out[name] = t
            continue
        hf = "model." + name
        if ".qkv_proj." in name:
            for short, (a, b) in (("q_proj", (0, q)), ("k_proj", (q, q + kv)), ("v_proj", (q + kv, q + 2 * kv))):
                out[hf.replace("qkv_proj", short)] = t[a:b]
        elif ".gate_up_proj." in name:
            out[hf.replace("gate_up_proj", "gate_proj")] = t[:inter]
            out[hf.replace("gate_up_proj", "up_proj")] = t[inter:]
        else:
            out[hf] = t
    return out


def hf_model_from_ours(model: nn.Module, cfg: ModelConfig, device: str, dtype: torch.dtype) -> Any:
    import transformers as tf

    d = hf_config_dict(cfg)
    hf_cfg = tf.AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        hf = tf.AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
    sd = hf_state_dict(model, cfg)
    missing, unexpected = hf.load_state_dict(sd, strict=False, assign=True)
    missing = [m for m in missing if not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"weight mapping to transformers failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if cfg.tie_word_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    # inv_freq is a non-persistent buffer still on meta: rebuild the rotary module on the device.
    rotary = hf.model.rotary_emb
    with torch.device("cpu"):  # some versions take a device argument, some do not
        hf.model.rotary_emb = type(rotary)(hf.config).to(device)
    for n, b in hf.named_buffers():
        if b.is_meta:
            raise ValueError(f"transformers buffer {n} was not materialized")
    return hf.eval()


def hf_model_from_folder(folder: str, device: str, dtype: torch.dtype) -> Any:
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
