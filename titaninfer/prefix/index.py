"""The prefix index: a hash chain over full, committed KV blocks.

Each cached block is stored under its chain key (see hashing.py), which already encodes the
whole prefix before it, so the index is a flat dict key -> block id plus the reverse map;
the chain of parent keys makes it a radix tree over blocks without explicit child pointers.
Matching walks the chain from the root and stops at the first block not cached.

Why a hash chain rather than pointer-linked radix nodes: a block evicted from the middle of
a chain leaves its descendants reachable again as soon as the same content is recomputed
and re-committed (their keys do not depend on block ids), and lookups cost one hash and one
dict probe per block whatever the cache size.

Invariants: `key_of(get(k)) == k` for every cached key and `get(key_of(b)) == b` for every
cached block; a block id is cached under at most one key. The index holds no reference
counts: the manager owns those.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field

from titaninfer.prefix.hashing import BlockHasher, KeyedBlockHasher


@dataclass
class PrefixMatch:
    """The cached prefix found for a token sequence: block ids and their chain keys."""

    block_ids: list[int] = field(default_factory=list)
    keys: list[Hashable] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.block_ids)


class PrefixIndex:
    def __init__(self, block_size: int, hasher: BlockHasher | None = None) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.hasher: BlockHasher = hasher if hasher is not None else KeyedBlockHasher()
        self._blocks: dict[Hashable, int] = {}
        self._keys: dict[int, Hashable] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._blocks

    def get(self, key: Hashable) -> int | None:
        return self._blocks.get(key)

    def key_of(self, block_id: int) -> Hashable | None:
        return self._keys.get(block_id)

    def items(self) -> Iterator[tuple[Hashable, int]]:
        return iter(self._blocks.items())

    def root(self, cache_salt: str | None) -> Hashable:
        return self.hasher.root(cache_salt)

    def chain_keys(self, parent: Hashable, token_ids: Sequence[int], first_block: int,
                   end_block: int) -> list[Hashable]:
        """Keys of blocks [first_block, end_block) of `token_ids`, where `parent` is the key
        of block first_block - 1 (or the root)."""
        return list(self.hasher.iter_keys(parent, token_ids, self.block_size, first_block, end_block))

    def match(self, root: Hashable, token_ids: Sequence[int], max_blocks: int) -> PrefixMatch:
        """The longest cached chain of whole blocks of `token_ids`, at most `max_blocks`."""
        blocks = self._blocks
        out = PrefixMatch()
        end = min(max_blocks, len(token_ids) // self.block_size)
        for key in self.hasher.iter_keys(root, token_ids, self.block_size, 0, end):
            block = blocks.get(key)
            if block is None:
                break
            out.block_ids.append(block)
            out.keys.append(key)
        return out

    def insert(self, key: Hashable, block_id: int) -> None:
        if key in self._blocks:
            raise KeyError(f"key already cached (block {self._blocks[key]})")
        if block_id in self._keys:
            raise KeyError(f"block {block_id} is already cached under another key")
        self._blocks[key] = block_id
        self._keys[block_id] = key

    def pop(self, key: Hashable) -> int:
        block_id = self._blocks.pop(key)
        del self._keys[block_id]
        return block_id

    def check_invariants(self) -> None:
        if len(self._blocks) != len(self._keys):
            raise AssertionError(f"index maps {len(self._blocks)} keys but {len(self._keys)} blocks")
        for key, b in self._blocks.items():
            if self._keys.get(b) != key:
                raise AssertionError(f"block {b}: reverse map disagrees with the index")
