"""PrefixCachingKVManager: the KV cache manager with prefix reuse and eviction.

It keeps `KVCacheManager`'s interface (the scheduler and engine see nothing new) and adds:
- `match_prefix` on admission: the longest cached chain of whole blocks of the request's
  tokens (at most len - 1 tokens: the last token is always computed so logits exist) is put
  at the head of its block table, each block shared by one more reference;
- `commit_full_blocks` after each step: full, computed blocks enter the prefix index. Only
  then can another request match them, so nobody ever writes into a shared block;
- `free`: cached blocks stay in the pool after their last request lets go (evictable);
- `allocate_slots`: takes free (uncached) blocks first, then evicts cached unreferenced
  blocks in the order the eviction policy decides.

Reference counting, in one rule: the index holds one reference on every cached block, each
request one per table entry. So a cached block is evictable exactly when its ref count is 1,
the `BlockPool` invariants hold unchanged (ref 0 <=> in the free list), and evicting is
"the index drops its reference". Reported figures exclude evictable blocks from "used":
`num_free_blocks` = free + evictable, which is what a new request can get.

Per-request state (root key from the cache salt, chain keys of its committed blocks) lives
from `match_prefix` until `free`; a request that never went through `match_prefix` is
served but never committed (its salt is unknown, so caching it could leak across tenants).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from titaninfer.kv.manager import KVCacheManager, blocks_needed
from titaninfer.policy import EvictionPolicy, make_eviction_policy
from titaninfer.prefix.hashing import BlockHasher
from titaninfer.prefix.index import PrefixIndex


@dataclass
class _RequestChain:
    root: Hashable
    keys: list[Hashable] = field(default_factory=list)  # keys of table[:len(keys)] (committed)


class PrefixCachingKVManager(KVCacheManager):
    def __init__(self, num_blocks: int, block_size: int,
                 eviction_policy: str | EvictionPolicy = "lru",
                 hasher: BlockHasher | None = None) -> None:
        super().__init__(num_blocks, block_size)
        self.policy: EvictionPolicy = (make_eviction_policy(eviction_policy, num_blocks)
                                       if isinstance(eviction_policy, str) else eviction_policy)
        self.index = PrefixIndex(block_size, hasher)
        self._chains: dict[str, _RequestChain] = {}
        self.num_evictions = 0
        self.num_query_tokens = 0  # tokens offered to match_prefix (every call, retries too)
        self.num_hit_tokens = 0  # of which served from the cache

    # ------------------------------------------------------------------ figures
    @property
    def num_cached_blocks(self) -> int:
        return len(self.index)

    @property
    def num_evictable_blocks(self) -> int:
        return self.policy.num_evictable

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free + self.policy.num_evictable

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_used - self.policy.num_evictable

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.pool.num_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0

    # ------------------------------------------------------------------ prefix hooks
    def match_prefix(self, request_id: str, token_ids: list[int], cache_salt: str | None = None) -> int:
        if self._tables.get(request_id):
            raise RuntimeError(f"match_prefix on request {request_id!r}, which already holds blocks")
        root = self.index.root(cache_salt)
        # Whole blocks only, and never the last token: its logits must be computed.
        max_blocks = max(0, (len(token_ids) - 1) // self.block_size)
        match = self.index.match(root, token_ids, max_blocks)
        ref_count, policy = self.pool.ref_count, self.policy
        for block, key in zip(match.block_ids, match.keys, strict=True):
            if ref_count(block) == 1:  # only the index held it: leaves the evictable set
                policy.on_pin(key)
            policy.on_hit(key)
        if match.block_ids:
            self.pool.share(match.block_ids)
            self._tables[request_id] = list(match.block_ids)
        self._chains[request_id] = _RequestChain(root, list(match.keys))
        num_cached = match.num_blocks * self.block_size
        self.num_query_tokens += len(token_ids)
        self.num_hit_tokens += num_cached
        return num_cached

    def commit_full_blocks(self, request_id: str, token_ids: list[int], num_computed: int) -> None:
        chain = self._chains.get(request_id)
        table = self._tables.get(request_id)
        if chain is None or not table:
            return
        done = len(chain.keys)
        # Only blocks whose every token id is known (async scheduling may count pending ones).
        num_full = min(min(num_computed, len(token_ids)) // self.block_size, len(table))
        if num_full <= done:
            return
        parent = chain.keys[-1] if chain.keys else chain.root
        keys = self.index.chain_keys(parent, token_ids, done, num_full)
        chain.keys.extend(keys)
        for block, key in zip(table[done:num_full], keys, strict=True):
            if key in self.index:
                # Same content computed twice (two requests admitted together): keep the
                # first copy; ours stays private and returns to the free list with us.
                continue
            self.index.insert(key, block)
            self.pool.share([block])  # the index's reference
            self.policy.on_insert(key)

    # ------------------------------------------------------------------ allocation
    def allocate_slots(self, request_id: str, num_tokens: int) -> list[int] | None:
        table = self._tables.setdefault(request_id, [])
        need = blocks_needed(num_tokens, self.block_size) - len(table)
        if need <= 0:
            return []
        if need > self.pool.num_free + self.policy.num_evictable:
            if not table:
                del self._tables[request_id]
            return None
        if need > self.pool.num_free:
            self._evict(need - self.pool.num_free)
        new = self.pool.allocate(need)
        table.extend(new)
        return new

    def _evict(self, n: int) -> None:
        policy, index, pool = self.policy, self.index, self.pool
        victims = []
        for _ in range(n):
            block = index.pop(policy.evict())
            if pool.ref_count(block) != 1:
                raise AssertionError(f"policy {policy.name} evicted block {block}, which is in use")
            victims.append(block)
        pool.free(victims)  # the index's references: the blocks join the free list
        self.num_evictions += n

    def free(self, request_id: str) -> None:
        self._chains.pop(request_id, None)
        table = self._tables.pop(request_id, None)
        if not table:
            return
        pool, key_of, policy = self.pool, self.index.key_of, self.policy
        # Tail first: the deepest blocks are the least shared, so under recency policies
        # they become the oldest evictable entries and go before the shared head.
        rev = table[::-1]
        pool.free(rev)
        for block in rev:
            if pool.ref_count(block) == 1:
                key = key_of(block)
                if key is not None:
                    policy.on_unpin(key)

    # ------------------------------------------------------------------ checks
    def check_invariants(self) -> None:
        """Block accounting with cached blocks:
        - the pool's own invariants (ref 0 <=> free list);
        - every block's ref count == its table entries + 1 if cached;
        - the policy's evictable set == the cached blocks with ref count 1;
        - a request's uncommitted blocks (the ones it may still write) are its alone."""
        pool = self.pool
        pool.check_invariants()
        self.index.check_invariants()
        expected = [0] * pool.num_blocks
        for table in self._tables.values():
            for b in table:
                expected[b] += 1
        for _, b in self.index.items():
            expected[b] += 1
        for b, want in enumerate(expected):
            if pool.ref_count(b) != want:
                raise AssertionError(f"block {b}: ref count {pool.ref_count(b)}, expected {want} "
                                     f"(tables + index)")
        evictable = {key for key, b in self.index.items() if pool.ref_count(b) == 1}
        listed = list(self.policy.evictable_keys())
        if len(listed) != len(set(listed)) or set(listed) != evictable:
            raise AssertionError(f"policy lists {len(listed)} evictable blocks, the index has "
                                 f"{len(evictable)}")
        if self.policy.num_evictable != len(evictable) or len(self.policy) != len(self.index):
            raise AssertionError("policy counters disagree with the index")
        for rid, table in self._tables.items():
            chain = self._chains.get(rid)
            done = len(chain.keys) if chain is not None else 0
            for i, b in enumerate(table[done:], start=done):
                if pool.ref_count(b) != 1 or self.index.key_of(b) is not None:
                    raise AssertionError(f"request {rid!r} may still write block {b} (position {i}), "
                                         f"but it is shared or cached")
            if chain is not None:
                for b, key in zip(table[:len(chain.keys)], chain.keys, strict=True):
                    cached_key = self.index.key_of(b)
                    if cached_key is not None and cached_key != key:
                        raise AssertionError(f"request {rid!r}: block {b} is cached under another key")
