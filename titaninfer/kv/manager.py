"""Per-request block tables over a shared `BlockPool`.

The manager owns the accounting: it hands out block ids for a request's tokens and takes
them back; it never touches request objects or tensors. A request with `n` tokens in the
cache holds exactly ceil(n / block_size) blocks.
"""

from __future__ import annotations

from titaninfer.kv.block_pool import BlockPool


def blocks_needed(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self._tables: dict[str, list[int]] = {}

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_used

    @property
    def usage(self) -> float:
        return self.pool.num_used / self.pool.num_blocks

    def block_ids(self, request_id: str) -> list[int]:
        return self._tables.get(request_id, [])

    def can_fit(self, num_tokens: int) -> bool:
        """Whether a request of `num_tokens` could ever fit, the whole pool to itself."""
        return blocks_needed(num_tokens, self.block_size) <= self.pool.num_blocks

    def allocate_slots(self, request_id: str, num_tokens: int) -> list[int] | None:
        """Grow the request's table to hold `num_tokens` tokens. Returns the new block ids,
        or None (and changes nothing) when too few blocks are free."""
        table = self._tables.setdefault(request_id, [])
        need = blocks_needed(num_tokens, self.block_size) - len(table)
        if need <= 0:
            return []
        if need > self.pool.num_free:
            if not table:
                del self._tables[request_id]
            return None
        new = self.pool.allocate(need)
        table.extend(new)
        return new

    # Prefix reuse hooks. Without a prefix index nothing is ever matched or kept.
    def match_prefix(self, request_id: str, token_ids: list[int], cache_salt: str | None = None) -> int:
        """Attach cached blocks holding a prefix of `token_ids` to the request's (empty)
        table; returns how many tokens they cover (a multiple of block_size, and less
        than len(token_ids) so at least one token is computed)."""
        return 0

    def commit_full_blocks(self, request_id: str, token_ids: list[int], num_computed: int) -> None:
        """Offer the request's full blocks (token_ids[:num_computed]) to the prefix index."""

    def free(self, request_id: str) -> None:
        """Release all of the request's blocks (no-op for an unknown request)."""
        table = self._tables.pop(request_id, None)
        if table:
            # Free in reverse so the tail blocks (least likely shared) return first.
            self.pool.free(table[::-1])

    def check_invariants(self) -> None:
        self.pool.check_invariants()
        held = sum(len(t) for t in self._tables.values())
        if held != self.pool.num_used:
            raise AssertionError(f"tables hold {held} blocks but the pool has {self.pool.num_used} in use")
