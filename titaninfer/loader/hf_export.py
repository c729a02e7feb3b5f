"""Our model's weights under Hugging Face names (fused projections split back), so a
Hugging Face model can run exactly the weights we run (dummy-weight comparisons, benches)."""

from __future__ import annotations

import torch
from torch import nn


def to_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    cfg = model.config  # type: ignore[attr-defined]
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name.startswith("rotary"):
            continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        hf = name if name == "lm_head.weight" else f"model.{name}"
        if ".qkv_proj." in name:
            q, k, v = t.split([cfg.q_size, cfg.kv_size, cfg.kv_size], dim=0)
            for short, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[hf.replace("qkv_proj", short)] = part
        elif ".gate_up_proj." in name:
            gate, up = t.split([cfg.intermediate_size, cfg.intermediate_size], dim=0)
            out[hf.replace("gate_up_proj", "gate_proj")] = gate
            out[hf.replace("gate_up_proj", "up_proj")] = up
        else:
            out[hf] = t
    return out


def hf_model_like(model: nn.Module, hf_config: dict, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    """A transformers model with the given config.json dict holding our model's weights."""
    import transformers

    config = transformers.AutoConfig.for_model(**hf_config)
    with torch.device(device):
        hf = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = to_hf_state_dict(model)
    result = hf.load_state_dict(state, strict=False)
    missing = [n for n in result.missing_keys if not (n == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(f"export mismatch: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    return hf.eval()
