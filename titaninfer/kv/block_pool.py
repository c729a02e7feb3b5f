"""A pool of KV blocks with reference counts.

Invariants (checked by `check_invariants`):
- every block id in [0, num_blocks) is either free (ref count 0, in the free list exactly
  once) or in use (ref count >= 1, not in the free list);
- reference counts never go negative (freeing a free block raises).
"""

from __future__ import annotations

from collections import deque


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def allocate(self, n: int) -> list[int]:
        """Take `n` free blocks (ref count 1 each). Raises if fewer are free: callers check
        `num_free` first, so running out here is a bug, not a load condition."""
        if n > len(self._free):
            raise RuntimeError(f"block pool exhausted: asked for {n}, {len(self._free)} free")
        out = [self._free.popleft() for _ in range(n)]
        for b in out:
            self._ref_counts[b] = 1
        return out

    def share(self, block_ids: list[int]) -> None:
        """Add a reference to blocks already in use."""
        for b in block_ids:
            if self._ref_counts[b] < 1:
                raise RuntimeError(f"cannot share block {b}: it is free")
            self._ref_counts[b] += 1

    def free(self, block_ids: list[int]) -> list[int]:
        """Drop one reference from each block; returns the blocks that became free."""
        released = []
        for b in block_ids:
            rc = self._ref_counts[b]
            if rc < 1:
                raise RuntimeError(f"double free of block {b}")
            self._ref_counts[b] = rc - 1
            if rc == 1:
                self._free.append(b)
                released.append(b)
        return released

    def check_invariants(self) -> None:
        free_set = set(self._free)
        if len(free_set) != len(self._free):
            raise AssertionError("a block is in the free list twice")
        for b, rc in enumerate(self._ref_counts):
            if rc < 0:
                raise AssertionError(f"block {b} has negative ref count {rc}")
            if (rc == 0) != (b in free_set):
                raise AssertionError(f"block {b}: ref count {rc} but in free list: {b in free_set}")
