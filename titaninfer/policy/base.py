"""The eviction-policy interface: which cached, unreferenced KV block to give up next.

A policy sees only block *keys* (the prefix index's content hashes), never block ids or
tensors. The prefix-caching KV manager tells it what happens to each cached block:

    on_insert(key)   the block was just cached (committed); a request holds it, so it is pinned
    on_hit(key)      a request reused the block (a prefix hit); it is pinned while held
    on_unpin(key)    its last request let go: it is now evictable
    on_pin(key)      an evictable block was matched again: no longer evictable
    evict()          choose one evictable block, forget it, return its key

Invariants every implementation keeps (the tests check them):
- `evict` returns only a key that is resident and evictable (unpinned); a pinned block is
  never returned, whatever the policy's own bookkeeping (ghost lists, queues) says;
- `num_evictable` equals the number of resident keys that are unpinned;
- ghost histories (ARC, S3-FIFO) are keyed by content hash and hold only keys that are not
  resident; they inform placement, they never produce a victim.

"Recency" for a block is the time it was last *released*: a block held by a running request
is in use until the request lets go of it, so it enters the eviction order on unpin. This
keeps every decision O(1): pinned blocks are simply absent from the eviction structures.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Protocol, runtime_checkable

BlockKey = Hashable


@runtime_checkable
class EvictionPolicy(Protocol):
    name: str

    @property
    def num_evictable(self) -> int:
        """How many resident keys are unpinned (candidates for `evict`)."""
        ...

    def on_insert(self, key: BlockKey) -> None:
        """`key` became resident, pinned (a request holds it). It must not be resident."""
        ...

    def on_hit(self, key: BlockKey) -> None:
        """A request reused resident `key` (counts as an access)."""
        ...

    def on_pin(self, key: BlockKey) -> None:
        """Resident, evictable `key` was taken by a request: no longer evictable."""
        ...

    def on_unpin(self, key: BlockKey) -> None:
        """Resident, pinned `key` lost its last request: now evictable."""
        ...

    def evict(self) -> BlockKey:
        """Remove and return one evictable key. Raises LookupError if there is none."""
        ...

    def evictable_keys(self) -> Iterator[BlockKey]:
        """All evictable keys, in no particular order (for invariant checks; O(n))."""
        ...

    def __len__(self) -> int:
        """Resident keys, pinned or not (ghosts excluded)."""
        ...


class NoEvictableBlock(LookupError):
    """`evict` was called with every resident block pinned (a caller bug: the manager checks
    `num_evictable` first)."""
