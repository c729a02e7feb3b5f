"""Prefix reuse: a hash-chain index over full KV blocks and the KV manager built on it.

    PrefixCachingKVManager(num_blocks, block_size, "lru")   # what the engine builds

hashing.py   block keys (keyed BLAKE2b per process; exact-prefix reference)
index.py     the prefix index: key -> block id, matching by walking the chain
manager.py   KVCacheManager + match / commit / keep-until-evicted, over titaninfer.policy
"""

from __future__ import annotations

from titaninfer.prefix.hashing import BlockHasher, ExactPrefixHasher, KeyedBlockHasher
from titaninfer.prefix.index import PrefixIndex, PrefixMatch
from titaninfer.prefix.manager import PrefixCachingKVManager

__all__ = [
    "BlockHasher", "ExactPrefixHasher", "KeyedBlockHasher", "PrefixCachingKVManager",
    "PrefixIndex", "PrefixMatch",
]
