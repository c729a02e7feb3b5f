"""Micro-benchmarks of the prefix cache, the block allocator and the eviction policies.

    python -m titaninfer.bench.micro prefix          # match latency, 100k cached blocks
    python -m titaninfer.bench.micro alloc           # allocate_slots / free latency
    python -m titaninfer.bench.micro evict           # one eviction decision, per policy
    python -m titaninfer.bench.micro shared-prefix   # SmolLM2 on CPU, caching on vs off
    python -m titaninfer.bench.micro all             # the first three

Each latency is timed call by call with perf_counter_ns and reported as p50 / p99 in
microseconds. The garbage collector is paused while timing (as `timeit` does): a collection
pause is a property of the whole process, not of the operation measured. Targets (the
issue's): lookup p99 < 1 ms at 100k cached blocks, alloc/free p99 < 100 us, eviction
decision p99 < 10 us.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

from titaninfer.policy import POLICIES, make_eviction_policy
from titaninfer.prefix import PrefixCachingKVManager


@dataclass
class Latency:
    name: str
    samples_ns: list[int]

    def pct_us(self, q: float) -> float:
        s = sorted(self.samples_ns)
        return s[min(len(s) - 1, int(q * len(s)))] / 1e3

    def line(self) -> str:
        return (f"{self.name:<44} p50 {self.pct_us(0.50):9.2f} us   p99 {self.pct_us(0.99):9.2f} us"
                f"   (n={len(self.samples_ns)})")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_now = time.perf_counter_ns


# ---------------------------------------------------------------------- prefix lookup
def bench_prefix(num_cached_blocks: int = 100_000, block_size: int = 16, prompt_len: int = 2048,
                 trials: int = 2000, seed: int = 0) -> list[Latency]:
    """Fill the cache with `num_cached_blocks` blocks (chains of prompt_len tokens sharing
    nothing), then time match_prefix of prompts that hit a whole chain but their last block,
    hit half of one, or miss at once. Each match is undone (free) outside the timing."""
    rng = random.Random(seed)
    blocks_per_chain = prompt_len // block_size
    num_chains = -(-num_cached_blocks // blocks_per_chain)
    kv = PrefixCachingKVManager(num_chains * blocks_per_chain + 4 * blocks_per_chain, block_size)
    chains = []
    for i in range(num_chains):
        toks = [rng.randrange(50_000) for _ in range(prompt_len)]
        chains.append(toks)
        kv.match_prefix(f"fill{i}", toks)
        kv.allocate_slots(f"fill{i}", prompt_len)
        kv.commit_full_blocks(f"fill{i}", toks, prompt_len)
        kv.free(f"fill{i}")
    assert kv.num_cached_blocks >= num_cached_blocks
    out = []
    cases = {
        f"match {prompt_len} tok, full hit": lambda t: t,
        f"match {prompt_len} tok, half hit": lambda t: t[:prompt_len // 2] + [7] * (prompt_len // 2),
        f"match {prompt_len} tok, miss": lambda t: [t[0] + 1] + t[1:],
    }
    for name, make in cases.items():
        samples = []
        prompts = [make(rng.choice(chains)) for _ in range(trials)]
        with _no_gc():
            for j, p in enumerate(prompts):
                rid = f"q{j}"
                t0 = _now()
                kv.match_prefix(rid, p)
                samples.append(_now() - t0)
                kv.free(rid)
        out.append(Latency(f"{name} ({kv.num_cached_blocks // 1000}k cached)", samples))
    kv.check_invariants()
    return out


# ---------------------------------------------------------------------- alloc / free
def bench_alloc(num_blocks: int = 100_000, block_size: int = 16, trials: int = 5000,
                seed: int = 0) -> list[Latency]:
    """allocate_slots and free of one request, from free blocks and with evictions; free of
    a request whose blocks are all cached (each release notifies the policy)."""
    rng = random.Random(seed)
    out = []
    for n_blocks in (1, 32):
        kv = PrefixCachingKVManager(num_blocks, block_size)
        alloc, free = [], []
        with _no_gc():
            for j in range(trials):
                rid = f"r{j}"
                t0 = _now()
                kv.allocate_slots(rid, n_blocks * block_size)
                t1 = _now()
                kv.free(rid)
                t2 = _now()
                alloc.append(t1 - t0)
                free.append(t2 - t1)
        out.append(Latency(f"allocate_slots {n_blocks} block(s), free list", alloc))
        out.append(Latency(f"free {n_blocks} uncached block(s)", free))
    # Every block cached and evictable: each allocation must evict first.
    kv = PrefixCachingKVManager(num_blocks, block_size)
    bs = block_size
    for i in range(num_blocks // 32):
        toks = [rng.randrange(50_000) for _ in range(32 * bs)]
        kv.match_prefix(f"f{i}", toks)
        kv.allocate_slots(f"f{i}", 32 * bs)
        kv.commit_full_blocks(f"f{i}", toks, 32 * bs)
        kv.free(f"f{i}")
    evict_alloc, cached_free = [], []
    with _no_gc():
        for j in range(trials):
            rid = f"e{j}"
            toks = [rng.randrange(50_000) for _ in range(32 * bs)]
            kv.match_prefix(rid, toks)
            t0 = _now()
            kv.allocate_slots(rid, 32 * bs)
            evict_alloc.append(_now() - t0)
            kv.commit_full_blocks(rid, toks, 32 * bs)
            t0 = _now()
            kv.free(rid)
            cached_free.append(_now() - t0)
    out.append(Latency("allocate_slots 32 blocks, all by eviction", evict_alloc))
    out.append(Latency("free 32 cached blocks (-> evictable)", cached_free))
    kv.check_invariants()
    return out


# ---------------------------------------------------------------------- eviction decision
def bench_evict(capacity: int = 100_000, trials: int = 20_000, pinned_fraction: float = 0.1,
                zipf_alpha: float = 0.9, seed: int = 0) -> list[Latency]:
    """Each policy holds `capacity` resident keys, `pinned_fraction` of them in use. A
    steady stream of Zipf-popular accesses runs; each miss needs one eviction decision,
    which is what is timed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    universe = capacity * 4
    probs = np.arange(1, universe + 1, dtype=np.float64) ** -zipf_alpha
    probs /= probs.sum()
    stream = rng.choice(universe, size=trials * 8, p=probs).tolist()
    out = []
    for name in POLICIES:
        pol = make_eviction_policy(name, capacity)
        resident: set[Hashable] = set()
        pinned: set[Hashable] = set()
        for k in range(capacity):  # warm: fill, then pin a random tenth
            pol.on_insert(-1 - k)
            pol.on_unpin(-1 - k)
            resident.add(-1 - k)
        for k in rng.choice(capacity, size=int(capacity * pinned_fraction), replace=False).tolist():
            pol.on_pin(-1 - k)
            pinned.add(-1 - k)
        samples: list[int] = []
        with _no_gc():
            for key in stream:
                if len(samples) >= trials:
                    break
                if key in resident:
                    if key not in pinned:
                        pol.on_pin(key)
                        pol.on_hit(key)
                        pol.on_unpin(key)
                    else:
                        pol.on_hit(key)
                    continue
                t0 = _now()
                victim = pol.evict()
                samples.append(_now() - t0)
                resident.remove(victim)
                pol.on_insert(key)
                pol.on_unpin(key)
                resident.add(key)
        out.append(Latency(f"evict() {name}, {capacity // 1000}k resident, "
                           f"{int(pinned_fraction * 100)}% pinned", samples))
    return out


# ---------------------------------------------------------------------- shared prefix (model)
@dataclass
class SharedPrefixResult:
    enable_prefix_caching: bool
    num_requests: int
    prefix_hit_rate: float
    mean_ttft_s: float
    wall_s: float
    evictions: int


def run_shared_prefix(engine, *, num_groups: int = 8, group_size: int = 4,  # type: ignore[no-untyped-def]
                      system_len: int = 400, suffix_len: int = 12, max_tokens: int = 8,
                      seed: int = 0) -> SharedPrefixResult:
    """Groups of requests that share a system prompt (one per group) plus a short unique
    suffix. Groups are submitted one after another; inside a group a request arrives each
    engine step (a trickle, as from interactive users), and the group is drained before the
    next one starts. TTFT = first token time - arrival time, averaged over all requests."""
    from titaninfer.types import SamplingParams

    rng = random.Random(seed)
    vocab = engine.model_config.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    hits0, queries0 = engine.prefix_hit_tokens, engine.prefix_query_tokens
    evictions0 = getattr(engine.kv, "num_evictions", 0)
    ttfts: list[float] = []
    t_start = time.perf_counter()
    for _ in range(num_groups):
        system = [rng.randrange(100, vocab - 100) for _ in range(system_len)]
        for _ in range(group_size):
            suffix = [rng.randrange(100, vocab - 100) for _ in range(suffix_len)]
            engine.add_request(system + suffix, params)
            ttfts += _collect_ttfts(engine.step())
        while engine.has_unfinished_requests():
            ttfts += _collect_ttfts(engine.step())
    wall = time.perf_counter() - t_start
    hits, queries = engine.prefix_hit_tokens - hits0, engine.prefix_query_tokens - queries0
    kv = engine.kv
    return SharedPrefixResult(
        enable_prefix_caching=engine.config.cache.enable_prefix_caching,
        num_requests=len(ttfts),
        prefix_hit_rate=hits / queries if queries else 0.0,
        mean_ttft_s=statistics.fmean(ttfts) if ttfts else float("nan"),
        wall_s=wall,
        evictions=getattr(kv, "num_evictions", 0) - evictions0,
    )


def _collect_ttfts(outputs) -> list[float]:  # type: ignore[no-untyped-def]
    return [o.metrics.first_token_time - o.metrics.arrival_time for o in outputs
            if o.finished and o.metrics.first_token_time is not None]


def bench_shared_prefix(num_groups: int = 8, group_size: int = 4, system_len: int = 400,
                        max_tokens: int = 8) -> list[SharedPrefixResult]:
    import dataclasses

    from titaninfer.engine import LLMEngine

    base = LLMEngine.from_args(None, device="cpu", enable_prefix_caching=True)
    results = []
    for caching in (False, True):
        cache = dataclasses.replace(base.config.cache, enable_prefix_caching=caching)
        engine = LLMEngine(base.config.replace(cache=cache), base.loaded)
        run_shared_prefix(engine, num_groups=1, group_size=1, system_len=32, max_tokens=2, seed=99)  # warm-up
        results.append(run_shared_prefix(engine, num_groups=num_groups, group_size=group_size,
                                         system_len=system_len, max_tokens=max_tokens))
        del engine
    return results


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m titaninfer.bench.micro", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["prefix", "alloc", "evict", "shared-prefix", "all"])
    ap.add_argument("--cached-blocks", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--system-len", type=int, default=400)
    ap.add_argument("--max-tokens", type=int, default=8)
    args = ap.parse_args(argv)
    if args.which in ("prefix", "all"):
        for lat in bench_prefix(num_cached_blocks=args.cached_blocks):
            print(lat.line(), flush=True)
    if args.which in ("alloc", "all"):
        for lat in bench_alloc():
            print(lat.line(), flush=True)
    if args.which in ("evict", "all"):
        for lat in bench_evict():
            print(lat.line(), flush=True)
    if args.which == "shared-prefix":
        res = bench_shared_prefix(args.groups, args.group_size, args.system_len, args.max_tokens)
        for r in res:
            print(f"prefix caching {'on ' if r.enable_prefix_caching else 'off'}: "
                  f"{r.num_requests} requests, hit rate {r.prefix_hit_rate:6.1%}, "
                  f"mean TTFT {r.mean_ttft_s * 1e3:8.1f} ms, wall {r.wall_s:6.1f} s, "
                  f"evictions {r.evictions}", flush=True)
        off, on = res
        print(f"TTFT speed-up with caching: {off.mean_ttft_s / on.mean_ttft_s:.2f}x")


if __name__ == "__main__":
    main()
