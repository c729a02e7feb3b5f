"""Eviction policies for cached KV blocks (see `base.EvictionPolicy` for the contract).

    make_eviction_policy("arc", capacity=num_blocks)

LRU is the reference; LFU, ARC and S3-FIFO are the alternatives. All decide only among
evictable (cached, unreferenced) blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from titaninfer.policy.arc import ARCPolicy
from titaninfer.policy.base import BlockKey, EvictionPolicy, NoEvictableBlock
from titaninfer.policy.lfu import LFUPolicy
from titaninfer.policy.lru import LRUPolicy
from titaninfer.policy.s3fifo import S3FIFOPolicy

POLICIES: dict[str, Callable[[int | None], EvictionPolicy]] = {
    "lru": LRUPolicy,
    "lfu": LFUPolicy,
    "arc": ARCPolicy,
    "s3fifo": S3FIFOPolicy,
}


def make_eviction_policy(name: str, capacity: int | None = None) -> EvictionPolicy:
    """A fresh policy by config name. `capacity` (the cache's size in blocks) sizes ARC's
    ghost lists and S3-FIFO's queues; LRU and LFU ignore it."""
    factory = POLICIES.get(name.strip().lower()) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown eviction policy {name!r}; choose one of: {', '.join(POLICIES)}")
    return factory(capacity)


__all__ = [
    "ARCPolicy", "BlockKey", "EvictionPolicy", "LFUPolicy", "LRUPolicy", "NoEvictableBlock",
    "POLICIES", "S3FIFOPolicy", "make_eviction_policy",
]
