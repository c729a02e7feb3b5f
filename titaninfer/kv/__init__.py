"""The paged KV cache's accounting: a pool of fixed-size blocks and per-request block tables.

Pure Python: no tensors here. The runner owns the cache tensors; this package only decides
which block ids a request's tokens live in.
"""

from titaninfer.kv.block_pool import BlockPool
from titaninfer.kv.manager import KVCacheManager

__all__ = ["BlockPool", "KVCacheManager"]
