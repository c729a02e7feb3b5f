"""Block keys: the identity of a full KV block's content *and* everything before it.

A block's key is derived from its parent's key and its own token ids, so two blocks have
the same key only if their whole prefixes (and cache salts) are equal:

    key(root)    = H(secret, "root", salt)
    key(block i) = H(secret, key(block i-1), token_ids of block i)

`KeyedBlockHasher` (production) uses BLAKE2b-128 keyed with a secret drawn from `secrets`
once per process (or passed in per server): without the secret a client cannot predict a
key, so a crafted prompt can neither probe for nor collide with another user's blocks. The
salt enters at the root, so salted and unsalted chains (and different salts) never meet.

`ExactPrefixHasher` is the reference: the key *is* the salt plus the literal token prefix.
No collisions by construction, O(prefix length) per block; tests compare against it.
"""

from __future__ import annotations

import hashlib
import secrets
from array import array
from collections.abc import Hashable, Iterator, Sequence
from typing import Protocol

# One secret per process: keys are meaningless across restarts (the cache is not persisted).
_PROCESS_SECRET = secrets.token_bytes(32)
_DIGEST_BYTES = 16  # 128-bit keys: collisions need ~2^64 blocks even for an all-seeing adversary


class BlockHasher(Protocol):
    def root(self, cache_salt: str | None) -> Hashable:
        """The parent key of a request's first block."""
        ...

    def child(self, parent: Hashable, token_ids: Sequence[int]) -> Hashable:
        """The key of the block holding `token_ids` after the prefix keyed `parent`."""
        ...

    def iter_keys(self, parent: Hashable, token_ids: Sequence[int], block_size: int,
                  first_block: int, end_block: int) -> Iterator[Hashable]:
        """Keys of blocks first_block .. end_block - 1 of `token_ids`, lazily, where `parent`
        is the key of block first_block - 1 (or the root). Equal to chaining `child`."""
        ...


def _salt_bytes(cache_salt: str | None) -> bytes:
    # A tag byte keeps None apart from "" (a request without a salt vs an empty one).
    return b"\x00" if cache_salt is None else b"\x01" + cache_salt.encode("utf-8")


class KeyedBlockHasher:
    """Keyed BLAKE2b-128 over (parent key, token ids as little-endian int64)."""

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is not None and not 16 <= len(secret) <= 64:
            raise ValueError("the hash secret must be 16 to 64 bytes")
        self._secret = secret if secret is not None else _PROCESS_SECRET
        self._roots: dict[str | None, bytes] = {}
        # Keying BLAKE2b costs one extra compression; copying a keyed state skips it.
        self._keyed = hashlib.blake2b(key=self._secret, digest_size=_DIGEST_BYTES)

    def root(self, cache_salt: str | None) -> bytes:
        key = self._roots.get(cache_salt)
        if key is None:
            key = hashlib.blake2b(b"titaninfer/prefix/root" + _salt_bytes(cache_salt),
                                  key=self._secret, digest_size=_DIGEST_BYTES).digest()
            if len(self._roots) < 4096:  # salts are per tenant: a small memo, bounded anyway
                self._roots[cache_salt] = key
        return key

    def child(self, parent: Hashable, token_ids: Sequence[int]) -> bytes:
        # parent is always _DIGEST_BYTES long and tokens fixed-width, so the byte string
        # (parent || tokens) parses one way only.
        h = self._keyed.copy()
        h.update(parent + array("q", token_ids).tobytes())  # type: ignore[operator]
        return h.digest()

    def iter_keys(self, parent: Hashable, token_ids: Sequence[int], block_size: int,
                  first_block: int, end_block: int) -> Iterator[bytes]:
        # Tokens become bytes a run of blocks at a time (1, 2, 4, ... up to 32 blocks), then
        # a slice per block: a match that misses early converts almost nothing.
        copy, step = self._keyed.copy, block_size * 8
        start, run = first_block, 1
        while start < end_block:
            stop = min(end_block, start + run)
            buf = array("q", token_ids[start * block_size:stop * block_size]).tobytes()
            for off in range(0, len(buf), step):
                h = copy()
                h.update(parent + buf[off:off + step])  # type: ignore[operator]
                parent = h.digest()
                yield parent
            start, run = stop, min(run * 2, 32)


class ExactPrefixHasher:
    """Reference hasher: key = (salt tag, token ids of the whole prefix)."""

    def root(self, cache_salt: str | None) -> tuple:
        return (_salt_bytes(cache_salt),)

    def child(self, parent: Hashable, token_ids: Sequence[int]) -> tuple:
        return parent + tuple(token_ids)  # type: ignore[operator]

    def iter_keys(self, parent: Hashable, token_ids: Sequence[int], block_size: int,
                  first_block: int, end_block: int) -> Iterator[tuple]:
        for i in range(first_block, end_block):
            parent = self.child(parent, token_ids[i * block_size:(i + 1) * block_size])
            yield parent  # type: ignore[misc]
