"""A progress bar for long loads; silent for small ones and when stderr is not a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

_MIN_BYTES = 512 * 1024 * 1024


class _Null:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def progress(total_bytes: int, desc: str) -> Iterator[Any]:
    if total_bytes < _MIN_BYTES or not sys.stderr.isatty():
        yield _Null()
        return
    from tqdm import tqdm

    with tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, leave=False) as bar:
        yield bar
