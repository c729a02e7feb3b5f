"""LRU: evict the block released longest ago. The reference policy (simplest, O(1))."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from titaninfer.policy.base import BlockKey, NoEvictableBlock


class LRUPolicy:
    """Evictable keys live in one OrderedDict in release order (oldest first); pinned keys
    are only in `_resident`."""

    name = "lru"

    def __init__(self, capacity: int | None = None) -> None:
        del capacity  # LRU needs no size: it only orders what is evictable
        self._resident: set[BlockKey] = set()
        self._evictable: OrderedDict[BlockKey, None] = OrderedDict()

    @property
    def num_evictable(self) -> int:
        return len(self._evictable)

    def __len__(self) -> int:
        return len(self._resident)

    def on_insert(self, key: BlockKey) -> None:
        if key in self._resident:
            raise KeyError(f"block {key!r} is already resident")
        self._resident.add(key)

    def on_hit(self, key: BlockKey) -> None:
        if key in self._evictable:  # a hit without a pin still refreshes recency
            self._evictable.move_to_end(key)

    def on_pin(self, key: BlockKey) -> None:
        del self._evictable[key]

    def on_unpin(self, key: BlockKey) -> None:
        if key not in self._resident or key in self._evictable:
            raise KeyError(f"block {key!r} is not resident and pinned")
        self._evictable[key] = None

    def evict(self) -> BlockKey:
        if not self._evictable:
            raise NoEvictableBlock("no evictable block")
        key, _ = self._evictable.popitem(last=False)
        self._resident.discard(key)
        return key

    def evictable_keys(self) -> Iterator[BlockKey]:
        return iter(self._evictable)
