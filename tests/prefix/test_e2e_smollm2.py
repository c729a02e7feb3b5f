"""Prefix caching on the real model (SmolLM2-135M-Instruct, CPU): greedy tokens must not
change when blocks are reused, shared, evicted (under every policy) or recomputed after a
preemption; and a shared-prefix workload must hit the cache and cut TTFT.

One model load serves every engine here (engines are built on the same LoadedModel)."""

from __future__ import annotations

import dataclasses

import pytest

from titaninfer.bench.micro import run_shared_prefix
from titaninfer.engine import LLMEngine
from titaninfer.prefix import PrefixCachingKVManager
from titaninfer.types import SamplingParams

pytestmark = pytest.mark.slow

MAX_TOKENS = 16
NUM_BLOCKS_SMALL = 12  # the longest request needs 9 blocks: eviction and preemption happen
SYSTEM = ("You are a careful assistant for a museum of natural history. Answer visitors' "
          "questions about dinosaurs, minerals, oceans and the solar system in plain words, "
          "in one or two sentences, and never invent facts you are not sure about. If a "
          "question is about opening hours, tickets or the cafe, point visitors to the front "
          "desk on the ground floor. Be friendly, patient and encouraging with children.")


@pytest.fixture(scope="module")
def base() -> LLMEngine:
    return LLMEngine.from_args(None, device="cpu", num_blocks=16)


def make_engine(base: LLMEngine, *, caching: bool, policy: str = "lru", num_blocks: int = 256,
                max_num_seqs: int = 256) -> LLMEngine:
    cache = dataclasses.replace(base.config.cache, enable_prefix_caching=caching,
                                eviction_policy=policy, num_blocks=num_blocks)
    sched = dataclasses.replace(base.config.scheduler, max_num_seqs=max_num_seqs)
    return LLMEngine(base.config.replace(cache=cache, scheduler=sched), base.loaded)


def build_waves(base: LLMEngine) -> list[list[list[int]]]:
    enc = base.tokenizer.encode
    system = enc(SYSTEM)[:75]  # 4 full blocks of 16 and 11 tokens: ends inside a block
    assert len(system) == 75
    a = system + enc(" Visitor: How old is the Moon? Assistant:")
    b = system + enc(" Visitor: Why is the sea salty? Assistant:")
    c = system[:37] + enc(" questions about volcanoes. Visitor: What is lava? Assistant:")
    return [
        [a, list(a)],  # identical prompts admitted in the same step (duplicate commits)
        [b],  # shares 4 blocks with a (the shared prefix ends inside block 5)
        [c],  # shares 2 blocks (prefix ends inside block 3)
        [a[:64]],  # block-aligned and fully cached: the last block must be recomputed
        [a[:65]],  # one token past a boundary: 4 cached blocks, 1 token computed
        [list(a)],  # identical in full to a finished prompt
        [b + enc(" Also, what is a mineral?")],
    ]


def run_waves(engine: LLMEngine, waves: list[list[list[int]]],
              cached: dict[str, int] | None = None) -> dict[str, list[int]]:
    """One wave of requests per engine step (so later ones can hit earlier ones), then drain.
    Returns the greedy tokens per request id (and fills `cached`: prompt tokens served from
    the prefix cache)."""
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    out: dict[str, list[int]] = {}
    n = 0

    def collect(outputs) -> None:  # type: ignore[no-untyped-def]
        for o in outputs:
            if o.finished:
                out[o.request_id] = list(o.outputs[0].token_ids)
                if cached is not None:
                    cached[o.request_id] = o.metrics.num_cached_tokens

    for wave in waves:
        for prompt in wave:
            engine.add_request(prompt, params, request_id=f"w{n}")
            n += 1
        collect(engine.step())
    while engine.has_unfinished_requests():
        collect(engine.step())
    assert len(out) == n
    return out


FOLLOW_UP = " Visitor: And how deep is the ocean? Assistant:"


def run_two_phases(engine: LLMEngine, waves: list[list[list[int]]],
                   cached: dict[str, int] | None = None) -> dict[str, list[int]]:
    out = run_waves(engine, waves, cached)
    # Phase 2: a second turn on top of b's prompt *and its generated tokens* (whose KV was
    # written by decode steps), and a third copy of a.
    follow_up = waves[1][0] + out["w2"] + engine.tokenizer.encode(FOLLOW_UP)
    cached2: dict[str, int] = {}
    out.update({f"p2-{k}": v for k, v in run_waves(engine, [[follow_up], [waves[0][0]]], cached2).items()})
    if cached is not None:
        cached.update({f"p2-{k}": v for k, v in cached2.items()})
    engine.check_block_accounting()
    return out


@pytest.fixture(scope="module")
def reference(base: LLMEngine):  # type: ignore[no-untyped-def]
    waves = build_waves(base)
    ref = run_two_phases(make_engine(base, caching=False), waves)
    assert ref["w0"] == ref["w1"] == ref["w6"] == ref["p2-w1"]
    return waves, ref


def test_greedy_identical_with_prefix_caching(base: LLMEngine, reference) -> None:  # type: ignore[no-untyped-def]
    waves, ref = reference
    engine = make_engine(base, caching=True)
    assert isinstance(engine.kv, PrefixCachingKVManager)
    cached: dict[str, int] = {}
    got = run_two_phases(engine, waves, cached)
    stats = engine.stats()
    print(f"caching on: cached tokens per request {cached}; hit tokens {stats.prefix_hit_tokens}/{stats.prefix_query_tokens}, "
          f"cached blocks {stats.cached_blocks}")
    assert got == ref
    # b, a[:64], a[:65], the copies of a and the follow-up hit at least 4 blocks each
    assert stats.prefix_hit_tokens >= 6 * 4 * 16
    assert stats.cached_blocks > 0 and stats.evictions == 0
    b_len = len(waves[1][0])
    assert cached["w2"] == 64  # b: the 4 whole blocks of the shared system prompt
    assert cached["w3"] == 32  # c: its prefix ends inside block 3
    assert cached["w4"] == 48  # a[:64], fully cached: the last block is recomputed
    assert cached["w5"] == 64
    assert cached["p2-w0"] > b_len  # the follow-up reused blocks holding b's output tokens


@pytest.mark.parametrize("policy", ["lru", "lfu", "arc", "s3fifo"])
def test_greedy_identical_under_eviction(base: LLMEngine, reference, policy: str) -> None:  # type: ignore[no-untyped-def]
    waves, ref = reference
    engine = make_engine(base, caching=True, policy=policy, num_blocks=NUM_BLOCKS_SMALL)
    assert engine.kv.policy.name == policy
    got = run_two_phases(engine, waves)
    stats = engine.stats()
    print(f"{policy}: hits {stats.prefix_hit_tokens}/{stats.prefix_query_tokens} tokens, "
          f"evictions {stats.evictions}, preemptions {stats.num_preemptions}")
    assert got == ref
    assert stats.evictions > 0 and stats.prefix_hit_tokens > 0


def test_disabled_prefix_caching_uses_the_plain_manager(base: LLMEngine) -> None:
    engine = make_engine(base, caching=False)
    assert not isinstance(engine.kv, PrefixCachingKVManager)
    with pytest.raises(ValueError, match="lru, lfu, arc, s3fifo"):
        make_engine(base, caching=True, policy="mru")


def test_shared_prefix_workload_hits_and_cuts_ttft(base: LLMEngine) -> None:
    kw = dict(num_groups=2, group_size=4, system_len=400, suffix_len=12, max_tokens=4)
    results = {}
    for caching in (False, True):
        engine = make_engine(base, caching=caching, num_blocks=512)
        run_shared_prefix(engine, num_groups=1, group_size=1, system_len=32, max_tokens=2, seed=99)
        results[caching] = run_shared_prefix(engine, **kw)  # type: ignore[arg-type]
    off, on = results[False], results[True]
    print(f"shared-prefix: hit rate {on.prefix_hit_rate:.1%} (off: {off.prefix_hit_rate:.1%}), "
          f"mean TTFT {on.mean_ttft_s * 1e3:.0f} ms vs {off.mean_ttft_s * 1e3:.0f} ms without caching")
    assert on.num_requests == off.num_requests == 8
    assert off.prefix_hit_rate == 0.0
    assert on.prefix_hit_rate >= 0.6
    assert on.mean_ttft_s < off.mean_ttft_s
