"""LFU: evict the evictable block with the fewest accesses; ties go to the one released
longest ago (LRU).

Frequency buckets (freq -> OrderedDict in release order) plus a lazy min-heap of the
frequencies that have a bucket make every operation O(log F) at worst, F the number of
distinct frequencies (small in practice), and O(1) in the common case. A block's count is
forgotten when it is evicted (in-cache LFU: no aging, no history).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator

from titaninfer.policy.base import BlockKey, NoEvictableBlock


class LFUPolicy:
    name = "lfu"

    def __init__(self, capacity: int | None = None) -> None:
        del capacity
        self._freq: dict[BlockKey, int] = {}  # resident keys -> access count (insert = 1)
        self._buckets: dict[int, OrderedDict[BlockKey, None]] = {}  # evictable keys only
        self._heap: list[int] = []  # frequencies that may have a bucket (lazy)
        self._in_heap: set[int] = set()
        self._num_evictable = 0

    @property
    def num_evictable(self) -> int:
        return self._num_evictable

    def __len__(self) -> int:
        return len(self._freq)

    def frequency(self, key: BlockKey) -> int:
        return self._freq[key]

    def _bucket_add(self, key: BlockKey, freq: int) -> None:
        bucket = self._buckets.get(freq)
        if bucket is None:
            bucket = self._buckets[freq] = OrderedDict()
            if freq not in self._in_heap:
                self._in_heap.add(freq)
                heapq.heappush(self._heap, freq)
        bucket[key] = None

    def _bucket_remove(self, key: BlockKey, freq: int) -> None:
        bucket = self._buckets[freq]
        del bucket[key]
        if not bucket:
            del self._buckets[freq]  # its heap entry is dropped lazily in `evict`

    def on_insert(self, key: BlockKey) -> None:
        if key in self._freq:
            raise KeyError(f"block {key!r} is already resident")
        self._freq[key] = 1

    def on_hit(self, key: BlockKey) -> None:
        freq = self._freq[key]
        self._freq[key] = freq + 1
        bucket = self._buckets.get(freq)
        if bucket is not None and key in bucket:  # hit on an evictable key: move it up
            self._bucket_remove(key, freq)
            self._bucket_add(key, freq + 1)

    def on_pin(self, key: BlockKey) -> None:
        self._bucket_remove(key, self._freq[key])
        self._num_evictable -= 1

    def on_unpin(self, key: BlockKey) -> None:
        freq = self._freq[key]
        bucket = self._buckets.get(freq)
        if bucket is not None and key in bucket:
            raise KeyError(f"block {key!r} is already evictable")
        self._bucket_add(key, freq)
        self._num_evictable += 1

    def evict(self) -> BlockKey:
        if not self._num_evictable:
            raise NoEvictableBlock("no evictable block")
        while self._heap[0] not in self._buckets:
            self._in_heap.discard(heapq.heappop(self._heap))
        freq = self._heap[0]
        bucket = self._buckets[freq]
        key, _ = bucket.popitem(last=False)
        if not bucket:
            del self._buckets[freq]
        del self._freq[key]
        self._num_evictable -= 1
        return key

    def evictable_keys(self) -> Iterator[BlockKey]:
        for bucket in self._buckets.values():
            yield from bucket
