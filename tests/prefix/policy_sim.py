"""A tiny fixed-capacity cache driven through the EvictionPolicy interface, for traces.

Every access pins, hits and releases at once (no long-running requests), which turns the
KV-block protocol into the textbook cache model the policies were designed for.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from titaninfer.policy import EvictionPolicy


class TraceCache:
    def __init__(self, policy: EvictionPolicy, capacity: int) -> None:
        self.policy = policy
        self.capacity = capacity
        self.resident: set[Hashable] = set()
        self.hits = 0
        self.misses = 0
        self.evicted: list[Hashable] = []

    def access(self, key: Hashable) -> bool:
        if key in self.resident:
            self.policy.on_pin(key)
            self.policy.on_hit(key)
            self.policy.on_unpin(key)
            self.hits += 1
            return True
        if len(self.resident) >= self.capacity:
            victim = self.policy.evict()
            assert victim in self.resident, f"{self.policy.name} evicted non-resident {victim!r}"
            self.resident.remove(victim)
            self.evicted.append(victim)
        self.policy.on_insert(key)
        self.policy.on_unpin(key)
        self.resident.add(key)
        self.misses += 1
        return False

    def run(self, keys: Iterable[Hashable]) -> TraceCache:
        for k in keys:
            self.access(k)
        return self

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
