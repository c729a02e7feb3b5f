"""ARC (Megiddo & Modha, FAST'03), adapted to pinned blocks.

Resident keys are in T1 (seen once since they were cached) or T2 (hit again); ghost lists
B1 / B2 remember the keys recently evicted from T1 / T2 (content hashes only). The target
size `p` of T1 adapts: re-caching a key found in B1 means T1 was too small (p grows by
max(1, |B2|/|B1|)); one found in B2 means T2 was too small (p shrinks by max(1, |B1|/|B2|)).

Adaptations for a KV cache:
- the cache decides *when* to evict (the allocator asks), so ARC's REPLACE is `evict` and
  insertion never evicts by itself;
- pinned keys count in |T1| / |T2| but are absent from the per-list eviction order
  (OrderedDicts of evictable keys in release order); `evict` takes the LRU evictable key of
  T1 when |T1| > p (or T2 has none), else of T2, so a pinned block is never a victim;
- `capacity` is c, the number of blocks the cache holds; ghosts are trimmed so that
  |T1| + |B1| <= c and |T1| + |T2| + |B1| + |B2| <= 2c. With capacity None, c follows the
  number of resident keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from titaninfer.policy.base import BlockKey, NoEvictableBlock

_T1, _T2 = 0, 1


class ARCPolicy:
    name = "arc"

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"ARC needs a capacity >= 1, got {capacity}")
        self.capacity = capacity
        self.p = 0.0  # target size of T1
        self._where: dict[BlockKey, int] = {}  # resident key -> _T1 / _T2
        self._sizes = [0, 0]  # resident keys per list, pinned included
        self._evictable: tuple[OrderedDict[BlockKey, None], OrderedDict[BlockKey, None]] = (
            OrderedDict(), OrderedDict())
        self.b1: OrderedDict[BlockKey, None] = OrderedDict()  # ghosts, oldest first
        self.b2: OrderedDict[BlockKey, None] = OrderedDict()

    @property
    def _c(self) -> int:
        return self.capacity if self.capacity is not None else max(1, len(self._where))

    @property
    def num_evictable(self) -> int:
        return len(self._evictable[_T1]) + len(self._evictable[_T2])

    @property
    def t1_size(self) -> int:
        return self._sizes[_T1]

    @property
    def t2_size(self) -> int:
        return self._sizes[_T2]

    def __len__(self) -> int:
        return len(self._where)

    def list_of(self, key: BlockKey) -> str:
        """'T1', 'T2', 'B1', 'B2' or '' (for tests and debugging)."""
        if key in self._where:
            return "T1" if self._where[key] == _T1 else "T2"
        return "B1" if key in self.b1 else "B2" if key in self.b2 else ""

    def on_insert(self, key: BlockKey) -> None:
        if key in self._where:
            raise KeyError(f"block {key!r} is already resident")
        c = self._c
        if key in self.b1:
            self.p = min(float(c), self.p + max(1.0, len(self.b2) / len(self.b1)))
            del self.b1[key]
            dest = _T2
        elif key in self.b2:
            self.p = max(0.0, self.p - max(1.0, len(self.b1) / len(self.b2)))
            del self.b2[key]
            dest = _T2
        else:
            dest = _T1
        self._where[key] = dest
        self._sizes[dest] += 1
        self._trim_ghosts()

    def on_hit(self, key: BlockKey) -> None:
        src = self._where[key]
        evictable = self._evictable[src].pop(key, False) is None
        if src == _T1:
            self._where[key] = _T2
            self._sizes[_T1] -= 1
            self._sizes[_T2] += 1
        if evictable:
            self._evictable[_T2][key] = None

    def on_pin(self, key: BlockKey) -> None:
        del self._evictable[self._where[key]][key]

    def on_unpin(self, key: BlockKey) -> None:
        order = self._evictable[self._where[key]]
        if key in order:
            raise KeyError(f"block {key!r} is already evictable")
        order[key] = None

    def evict(self) -> BlockKey:
        e1, e2 = self._evictable
        if e1 and (self._sizes[_T1] > self.p or not e2):
            key, _ = e1.popitem(last=False)
            src, ghosts = _T1, self.b1
        elif e2:
            key, _ = e2.popitem(last=False)
            src, ghosts = _T2, self.b2
        else:
            raise NoEvictableBlock("no evictable block")
        del self._where[key]
        self._sizes[src] -= 1
        ghosts[key] = None
        self._trim_ghosts()
        return key

    def _trim_ghosts(self) -> None:
        c = self._c
        b1, b2 = self.b1, self.b2
        while b1 and self._sizes[_T1] + len(b1) > c:
            b1.popitem(last=False)
        while b2 and len(self._where) + len(b1) + len(b2) > 2 * c:
            b2.popitem(last=False)
        while b1 and len(self._where) + len(b1) + len(b2) > 2 * c:
            b1.popitem(last=False)

    def evictable_keys(self) -> Iterator[BlockKey]:
        yield from self._evictable[_T1]
        yield from self._evictable[_T2]
