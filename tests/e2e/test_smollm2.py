"""The real SmolLM2-135M-Instruct (GGUF, Q4_1 dequantized to float32) against Hugging Face
transformers loading the same file: greedy tokens on chat-templated prompts; batch
invariance under chunked prefill and preemption; the offline API's features."""

from __future__ import annotations

import os

import pytest
import torch

from titaninfer import LLM, SamplingParams

from .tiny_models import hf_greedy

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three prime numbers.",
    "Translate 'good morning' into Spanish.",
    "¿Cuál es el río más largo del mundo? Responde brevemente.",
]


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_gguf):
    import transformers

    folder, name = os.path.dirname(smollm2_gguf), os.path.basename(smollm2_gguf)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return tok, model.eval()


@pytest.fixture(scope="module")
def llm(smollm2_gguf):
    return LLM(smollm2_gguf, device="cpu", enable_prefix_caching=False)


def test_greedy_chat_matches_hf(llm, hf_smollm2):
    tok, model = hf_smollm2
    convs = [[{"role": "user", "content": p}] for p in CHAT_PROMPTS]
    outs = llm.chat(convs, SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True))
    for conv, out in zip(convs, outs, strict=True):
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict):
            ids = ids["input_ids"]
        assert out.prompt_token_ids == list(ids), "chat template or tokenizer differs from HF"
        ref = hf_greedy(model, list(ids), 64)
        assert out.outputs[0].token_ids == ref, conv[0]["content"]
        assert out.outputs[0].text == tok.decode(out.outputs[0].token_ids, skip_special_tokens=True)


def test_batch_invariance_with_chunking_and_preemption(smollm2_gguf):
    """32 mixed-length requests under a KV budget small enough to force chunked prefill and
    preemption give exactly the tokens each gives alone; afterwards every block is free."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(100, 40000, (int(n),), generator=g).tolist()
               for n in torch.randint(5, 120, (32,), generator=g)]
    max_tokens = [int(n) for n in torch.randint(4, 24, (32,), generator=g)]
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in max_tokens]
    solo = LLM(smollm2_gguf, device="cpu", enable_prefix_caching=False)
    alone = [solo.generate([p], sp)[0].outputs[0].token_ids for p, sp in zip(prompts, params, strict=True)]
    # 48 blocks of 16 tokens = 768 slots for ~32 x 80 tokens of demand; a 64-token budget
    # splits most prompts into chunks.
    batched = LLM(smollm2_gguf, device="cpu", enable_prefix_caching=False, num_blocks=48,
                  max_num_batched_tokens=64, max_num_seqs=32)
    outs = batched.generate(prompts, params)
    stats = batched.stats()
    assert stats.num_preemptions > 0
    for i, (o, ref) in enumerate(zip(outs, alone, strict=True)):
        assert o.outputs[0].token_ids == ref, f"request {i} differs when batched"
    assert stats.kv_blocks_used == 0
    batched.engine.check_block_accounting()


def test_offline_api_features(llm):
    out = llm.generate("The capital of France is", SamplingParams(temperature=0.0, max_tokens=20))[0]
    assert out.outputs[0].finish_reason in ("stop", "length")
    assert out.prompt == "The capital of France is" and out.prompt_token_ids
    # stop strings: matched across token boundaries and excluded from the text
    full = out.outputs[0].text
    assert len(full) > 6
    stop = full[3:6]
    cut = llm.generate("The capital of France is", SamplingParams(temperature=0.0, max_tokens=20, stop=[stop]))[0]
    assert cut.outputs[0].text == full[: full.index(stop)]
    assert cut.outputs[0].finish_reason == "stop" and cut.outputs[0].stop_reason == stop
    # n with a seed is reproducible and gives n completions
    sp = SamplingParams(n=3, temperature=0.9, seed=7, max_tokens=12)
    a = llm.generate("Once upon a time", sp)[0]
    b = llm.generate("Once upon a time", sp)[0]
    assert len(a.outputs) == 3 and [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    assert len({tuple(o.token_ids) for o in a.outputs}) > 1
    # logprobs: the sampled token's logprob and the top-n alternatives
    lp = llm.generate("Hello", SamplingParams(temperature=0.0, max_tokens=3, logprobs=4))[0].outputs[0]
    assert lp.logprobs is not None and len(lp.logprobs) == 3
    assert all(len(x.top) == 4 and x.top[0][0] == x.token_id for x in lp.logprobs)
    # max_tokens and the length finish reason
    ml = llm.generate("Count: 1, 2, 3,", SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))[0]
    assert len(ml.outputs[0].token_ids) == 5 and ml.outputs[0].finish_reason == "length"


def test_stop_token_ids_and_eos(llm):
    # Greedy chat replies end with <|im_end|> (an EOS id): finish_reason stop, not in text
    out = llm.chat([{"role": "user", "content": "Say hi."}], SamplingParams(temperature=0.0, max_tokens=64))[0]
    o = out.outputs[0]
    assert o.finish_reason == "stop" and o.token_ids[-1] in llm.engine.eos_token_ids
    assert "<|im_end|>" not in o.text
    first = o.token_ids[1]
    again = llm.chat([{"role": "user", "content": "Say hi."}],
                     SamplingParams(temperature=0.0, max_tokens=64, stop_token_ids=[first]))[0].outputs[0]
    assert again.token_ids == o.token_ids[:2] and again.stop_reason == first


def test_user_errors_are_value_errors(llm):
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="context"):
        llm.generate([[5] * 9000], SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]], SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="token ids"):
        llm.generate([[10**9]], SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="not found"):
        LLM("/no/such/model", device="cpu")
    assert not llm.engine.has_unfinished_requests()


def test_final_only_steps_return_just_the_finished_outputs(llm):
    """step(final_only=True), which LLM.generate uses, returns each request once, finished,
    with the same result as the last of the per-step outputs of step()."""
    params = [SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True) for m in (3, 9, 5)]
    results = {}
    for final_only in (False, True):
        eng = llm.engine
        ids = [eng.add_request([1, 504, 3458, 282, 4649, 314] * (i + 1), p) for i, p in enumerate(params)]
        last, returned = {}, []
        while eng.has_unfinished_requests():
            for out in eng.step(final_only=final_only):
                returned.append(out)
                last[out.request_id] = out
        if final_only:
            assert all(o.finished for o in returned) and len(returned) == len(ids)
        else:
            assert len(returned) > len(ids)  # every step reports every running request
        results[final_only] = [(last[i].outputs[0].token_ids, last[i].outputs[0].text) for i in ids]
    assert results[True] == results[False]
    assert [len(t) for t, _ in results[True]] == [3, 9, 5]
