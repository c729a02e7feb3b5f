"""The hf bench engine runs *our* weights: transformers models built from TitanInfer's
(fused) tensors produce TitanInfer's greedy tokens, sharing storage (no copy)."""

from __future__ import annotations

import json

import pytest
import torch

from titaninfer.bench.engines.hf_weights import hf_model_from_ours
from titaninfer.engine import LLMEngine
from titaninfer.types import SamplingParams

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2)
CONFIGS = {
    "llama": dict(TINY, architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=10000.0,
                  tie_word_embeddings=False, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                               high_freq_factor=4.0,
                                                               original_max_position_embeddings=64)),
    "qwen3": dict(TINY, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=16,
                  rope_theta=1e6, tie_word_embeddings=True),
}


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_greedy_tokens_match_on_shared_weights(arch: str, tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGS[arch]))
    eng = LLMEngine.from_args(f"dummy:{path}", device="cpu", enable_prefix_caching=False, seed=3)
    prompt = [5, 17, 99, 200, 31, 8, 64]
    eng.add_request(prompt, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True), request_id="a")
    ours = None
    while eng.has_unfinished_requests():
        for o in eng.step():
            if o.finished:
                ours = o.outputs[0].token_ids
    hf = hf_model_from_ours(eng.loaded.model, eng.model_config, "cpu", torch.float32)
    with torch.inference_mode():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                          cache_implementation="static", pad_token_id=0)
    assert out[0, len(prompt):].tolist() == ours
    # Views, not copies: the q projection lives inside our fused qkv tensor.
    ours_qkv = eng.loaded.model.layers[0].self_attn.qkv_proj.weight
    assert hf.model.layers[0].self_attn.q_proj.weight.data_ptr() == ours_qkv.data_ptr()
