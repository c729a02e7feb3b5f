"""Greedy tokens equal Hugging Face transformers' on random tiny Llama / Qwen2 / Qwen3
checkpoints written as sharded safetensors folders and loaded back through our loader."""

from __future__ import annotations

import os

import pytest
import torch

from titaninfer import LLM, SamplingParams

from .tiny_models import no_eos_greedy, tiny_hf_model, write_checkpoint

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [100, 3, 4], list(range(20, 90)), [1], [42] * 17]


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=no_eos_greedy(n))
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_greedy_matches_hf(arch: str, tmp_path) -> None:
    model = tiny_hf_model(arch)
    folder = write_checkpoint(model, str(tmp_path / arch))
    assert len([f for f in os.listdir(folder) if f.endswith(".safetensors")]) > 1  # sharded
    llm = LLM(folder, device="cpu", enable_prefix_caching=False, block_size=4)
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    outs = llm.generate(PROMPTS, params)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert out.outputs[0].token_ids == hf_greedy(model, prompt, 24), f"{arch} prompt {prompt[:5]}"


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_prefill_logits_match_hf(arch: str, tmp_path) -> None:
    """Logprobs of the first sampled token agree with HF's to float32 precision."""
    model = tiny_hf_model(arch, seed=1)
    folder = write_checkpoint(model, str(tmp_path / arch))
    llm = LLM(folder, device="cpu", enable_prefix_caching=False)
    prompt = list(range(3, 40))
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=1, logprobs=5))[0]
    lp = out.outputs[0].logprobs[0]
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].float(), -1)
    top_ref = ref.topk(5)
    assert [t for t, _ in lp.top] == top_ref.indices.tolist()
    assert torch.allclose(torch.tensor([v for _, v in lp.top]), top_ref.values, atol=1e-4)


def test_async_scheduling_matches_sync_with_preemption(tmp_path) -> None:
    """The overlapped step loop (placeholders for in-flight tokens) gives the same greedy
    tokens as the synchronous one, also when a small KV pool forces preemptions."""
    model = tiny_hf_model("llama", seed=2)
    folder = write_checkpoint(model, str(tmp_path / "m"))
    prompts = [list(range(3 + i, 3 + i + 5 + 7 * i)) for i in range(10)]
    params = [SamplingParams(temperature=0.0, max_tokens=8 + 3 * i, ignore_eos=True) for i in range(10)]
    results = {}
    for mode in (False, True):
        llm = LLM(folder, device="cpu", enable_prefix_caching=False, block_size=4, num_blocks=40,
                  max_num_batched_tokens=32, async_scheduling=mode)
        results[mode] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        if mode:
            assert llm.stats().num_preemptions > 0
    assert results[True] == results[False]
    for p, out, sp in zip(prompts, results[False], params, strict=True):
        assert out == hf_greedy(model, p, sp.max_tokens)
