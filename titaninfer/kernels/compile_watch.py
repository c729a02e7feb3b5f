"""Report Triton compiles that happen after start-up.

A kernel variant compiled mid-run stalls its step for ~1 s while the GPU idles, so every
constexpr or specialised argument that follows the batch is a latent performance bug. The
engine compiles the variants it knows of at start-up (inside `starting_up()`), then calls
`watch_late_compiles()`: from then on each compile outside a start-up is logged as a
warning naming the kernel and its specialisation, and counted (`late_compiles()`), so a
benchmark or a test can assert there were none.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)
_late: list[str] = []
_installed = False
_starting_up = 0  # > 0 while some engine is starting (a second engine in one process)


@contextlib.contextmanager
def starting_up() -> Iterator[None]:
    """Compiles inside this block are expected (engine start-up): not reported."""
    global _starting_up
    _starting_up += 1
    try:
        yield
    finally:
        _starting_up -= 1


def _on_compile(*args: Any, **kwargs: Any) -> bool:
    if _starting_up:
        return False
    desc = str(kwargs.get("repr") or (args[0] if args else "?"))
    _late.append(desc)
    logger.warning("Triton compiled a kernel variant after start-up (the step stalls): %s", desc[:400])
    return False  # never skip the compile


def watch_late_compiles() -> None:
    """Install the post-compile hook (idempotent). Without Triton's knobs API: a no-op."""
    global _installed
    if _installed:
        return
    try:
        from triton import knobs
    except ImportError:
        return
    knobs.runtime.jit_post_compile_hook = _on_compile
    _installed = True


def late_compiles() -> list[str]:
    """Descriptions of the kernel variants compiled since `watch_late_compiles()`."""
    return list(_late)
