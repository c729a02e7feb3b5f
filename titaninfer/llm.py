"""LLM: the offline Python API, shaped as vLLM users expect.

    from titaninfer import LLM, SamplingParams
    llm = LLM()                                   # embedded SmolLM2-135M-Instruct
    outs = llm.generate(["Hello"], SamplingParams(max_tokens=32))
    print(outs[0].outputs[0].text)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from titaninfer.engine import LLMEngine
from titaninfer.engine.engine import EngineStats
from titaninfer.types import RequestOutput, SamplingParams

Prompt = str | list[int] | dict[str, Any]


class LLM:
    def __init__(self, model: str | None = None, *, device: str | None = "auto", dtype: str = "auto",
                 block_size: int = 16, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
                 kv_cache_bytes: int | None = None, gpu_memory_utilization: float = 0.9,
                 num_blocks: int | None = None, max_model_len: int = 0, seed: int = 0,
                 scheduling_policy: str = "fcfs", enable_prefix_caching: bool = True,
                 eviction_policy: str = "lru", enable_chunked_prefill: bool = True,
                 enforce_eager: bool = False, async_scheduling: bool | None = None) -> None:
        self.engine = LLMEngine.from_args(
            model, device=device, dtype=dtype, block_size=block_size, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, kv_cache_bytes=kv_cache_bytes,
            gpu_memory_utilization=gpu_memory_utilization, num_blocks=num_blocks,
            max_model_len=max_model_len, seed=seed, scheduling_policy=scheduling_policy,
            enable_prefix_caching=enable_prefix_caching, eviction_policy=eviction_policy,
            enable_chunked_prefill=enable_chunked_prefill, enforce_eager=enforce_eager,
            async_scheduling=async_scheduling)

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def stats(self) -> EngineStats:
        """Engine counters: preemptions, KV blocks in use, prefix hits, tokens processed."""
        return self.engine.stats()

    def generate(self, prompts: Prompt | Sequence[Prompt],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 *, priority: Sequence[int] | None = None, use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate for each prompt (text, token ids, or {"prompt_token_ids": [...]}) and
        return the finished outputs in prompt order."""
        plist = _normalize_prompts(prompts)
        if isinstance(sampling_params, SamplingParams) or sampling_params is None:
            params = [sampling_params or SamplingParams()] * len(plist)
        else:
            params = list(sampling_params)
            if len(params) != len(plist):
                raise ValueError(f"got {len(params)} sampling params for {len(plist)} prompts")
        if priority is not None and len(priority) != len(plist):
            raise ValueError(f"got {len(priority)} priorities for {len(plist)} prompts")
        ids = []
        try:
            for i, (p, sp) in enumerate(zip(plist, params, strict=True)):
                ids.append(self.engine.add_request(p, sp, priority=priority[i] if priority else 0))
        except ValueError:
            for rid in ids:
                self.engine.abort(rid)
            raise
        return self._run(ids, use_tqdm)

    def chat(self, messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
             sampling_params: SamplingParams | None = None, *, add_generation_prompt: bool = True,
             use_tqdm: bool = False) -> list[RequestOutput]:
        """Apply the model's chat template to one conversation (or a list of them) and generate."""
        tok = self.engine.tokenizer
        if tok is None:
            raise ValueError("this model has no tokenizer or chat template")
        convs = cast("list[list[dict[str, Any]]]",
                     [messages] if messages and isinstance(messages[0], dict) else messages)
        prompts = [tok.encode_chat(c, add_generation_prompt=add_generation_prompt) for c in convs]
        return self.generate(prompts, sampling_params, use_tqdm=use_tqdm)

    def _run(self, ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        done: dict[str, RequestOutput] = {}
        wanted = set(ids)
        bar = None
        if use_tqdm:
            from tqdm import tqdm

            bar = tqdm(total=len(ids), desc="generating", unit="req")
        while wanted - done.keys():
            for out in self.engine.step(final_only=True):
                if out.finished and out.request_id in wanted:
                    done[out.request_id] = out
                    if bar is not None:
                        bar.update(1)
            if not self.engine.has_unfinished_requests() and wanted - done.keys():
                raise RuntimeError("engine went idle with requests unfinished")  # a bug, not user error
        if bar is not None:
            bar.close()
        return [done[i] for i in ids]


def _normalize_prompts(prompts: Prompt | Sequence[Prompt]) -> list[str | list[int]]:
    if isinstance(prompts, (str, dict)):
        prompts = [prompts]
    elif isinstance(prompts, (list, tuple)) and prompts and all(isinstance(t, int) for t in prompts):
        prompts = [list(prompts)]  # one prompt given as token ids
    out: list[str | list[int]] = []
    for p in prompts:  # type: ignore[union-attr]
        if isinstance(p, dict):
            if "prompt_token_ids" in p:
                out.append(list(p["prompt_token_ids"]))
            elif "prompt" in p:
                out.append(p["prompt"])
            else:
                raise ValueError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
        else:
            out.append(p)  # type: ignore[arg-type]
    if not out:
        raise ValueError("no prompts given")
    return out
