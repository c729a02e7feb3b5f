"""S3-FIFO (Yang et al., SOSP'23), adapted to pinned blocks.

Three FIFO queues: a small probation queue S (~10% of the cache), a main queue M, and a
ghost queue G of content hashes recently evicted from S. A new key enters S, or M if G
remembers it. Each resident key has a 2-bit access counter (0..3); a hit only bumps the
counter, it never moves the key (that is what makes it FIFO). To evict:
- from S (when |S| >= its target, or M has nothing evictable): the oldest key moves to M if
  it was accessed again while in S (its second access; the counter restarts at 0), else it
  is evicted and remembered in G;
- from M: the oldest key with a nonzero counter is reinserted with counter - 1 (a lazy
  CLOCK); the first with counter 0 is evicted.

Adaptations for a KV cache: queues keep every resident key in insertion order, pinned ones
included, so a hit never reorders anything. A pinned key met at the old end is skipped by
re-queueing it (S: promoted if it was accessed again, else another lap in S; M: another lap
without touching its counter); each call examines every S entry at most once before it
falls back to M, so `evict` always terminates and returns an unpinned key. Capacity None:
S's target follows 10% of the resident keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from titaninfer.policy.base import BlockKey, NoEvictableBlock

_S, _M = 0, 1
_MAX_FREQ = 3


class S3FIFOPolicy:
    name = "s3fifo"

    def __init__(self, capacity: int | None = None, small_ratio: float = 0.1) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"S3-FIFO needs a capacity >= 1, got {capacity}")
        if not 0.0 < small_ratio < 1.0:
            raise ValueError(f"small_ratio must be in (0, 1), got {small_ratio}")
        self.capacity = capacity
        self.small_ratio = small_ratio
        self._where: dict[BlockKey, int] = {}  # resident key -> _S / _M
        self._freq: dict[BlockKey, int] = {}
        self._pinned: set[BlockKey] = set()
        self._queues: tuple[OrderedDict[BlockKey, None], OrderedDict[BlockKey, None]] = (
            OrderedDict(), OrderedDict())  # resident keys, oldest first
        self._num_evictable = [0, 0]  # unpinned keys per queue
        self.ghost: OrderedDict[BlockKey, None] = OrderedDict()
        self.num_promotions = 0

    @property
    def _c(self) -> int:
        return self.capacity if self.capacity is not None else max(1, len(self._where))

    @property
    def small_target(self) -> int:
        return max(1, int(self._c * self.small_ratio))

    @property
    def ghost_capacity(self) -> int:
        return max(1, self._c - self.small_target)  # as many as M holds

    @property
    def num_evictable(self) -> int:
        return self._num_evictable[_S] + self._num_evictable[_M]

    @property
    def small_size(self) -> int:
        return len(self._queues[_S])

    @property
    def main_size(self) -> int:
        return len(self._queues[_M])

    def __len__(self) -> int:
        return len(self._where)

    def queue_of(self, key: BlockKey) -> str:
        """'S', 'M', 'G' or '' (for tests and debugging)."""
        if key in self._where:
            return "S" if self._where[key] == _S else "M"
        return "G" if key in self.ghost else ""

    def on_insert(self, key: BlockKey) -> None:
        if key in self._where:
            raise KeyError(f"block {key!r} is already resident")
        dest = _S
        if key in self.ghost:
            del self.ghost[key]
            dest = _M
        self._where[key] = dest
        self._freq[key] = 0
        self._pinned.add(key)
        self._queues[dest][key] = None

    def on_hit(self, key: BlockKey) -> None:
        freq = self._freq[key]
        if freq < _MAX_FREQ:
            self._freq[key] = freq + 1

    def on_pin(self, key: BlockKey) -> None:
        if key in self._pinned:
            raise KeyError(f"block {key!r} is already pinned")
        self._pinned.add(key)
        self._num_evictable[self._where[key]] -= 1

    def on_unpin(self, key: BlockKey) -> None:
        if key not in self._pinned:
            raise KeyError(f"block {key!r} is not resident and pinned")
        self._pinned.remove(key)
        self._num_evictable[self._where[key]] += 1

    def _promote(self, key: BlockKey) -> None:
        self._where[key] = _M
        self._freq[key] = 0
        self._queues[_M][key] = None
        if key not in self._pinned:
            self._num_evictable[_S] -= 1
            self._num_evictable[_M] += 1
        self.num_promotions += 1

    def evict(self) -> BlockKey:
        if not self.num_evictable:
            raise NoEvictableBlock("no evictable block")
        small, main = self._queues
        freq, pinned, n_ev = self._freq, self._pinned, self._num_evictable
        small_visits = len(small)  # bound: each S entry is looked at once per call
        while True:
            if small_visits > 0 and n_ev[_S] and (len(small) >= self.small_target or not n_ev[_M]):
                small_visits -= 1
                key, _ = small.popitem(last=False)
                if freq[key] >= 1:  # accessed again while on probation
                    self._promote(key)
                elif key in pinned:
                    small[key] = None
                else:
                    self._forget(key, _S)
                    self.ghost[key] = None
                    while len(self.ghost) > self.ghost_capacity:
                        self.ghost.popitem(last=False)
                    return key
                continue
            if not n_ev[_M]:
                # S's evictable keys were all promoted or are behind pinned ones we already
                # passed; go round S again.
                small_visits = len(small)
                continue
            key, _ = main.popitem(last=False)
            f = freq[key]
            if key in pinned:
                main[key] = None
            elif f > 0:
                freq[key] = f - 1
                main[key] = None
            else:
                self._forget(key, _M)
                return key

    def _forget(self, key: BlockKey, src: int) -> None:
        del self._where[key]
        del self._freq[key]
        self._num_evictable[src] -= 1

    def evictable_keys(self) -> Iterator[BlockKey]:
        for queue in self._queues:
            for key in queue:
                if key not in self._pinned:
                    yield key
