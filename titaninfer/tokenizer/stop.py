"""Stop strings on a growing output text.

The text grows by a few characters per step and a stop string may straddle any number of
token boundaries. `StopChecker.check(text, num_new_chars)` looks only at the characters that
could complete a match now: the new ones plus `len(stop) - 1` before them, so a check is
O(new chars + longest stop) and never rescans the whole output.

Semantics (the same as checking after every single character):
- the winning match is the one that *completes* first (smallest end position); when several
  complete at the same character, the longest one (it starts earliest) wins;
- the returned text is cut just before the match, or just after it with
  `include_stop_str_in_output`; anything after the match is dropped.

For streaming, `holdback(text)` is how many trailing characters must not be shown yet
because they are a proper prefix of some stop string: if the stop string completes later,
those characters will have been cut. Showing `text[:len(text) - holdback(text)]` never shows a
character that a later `check` removes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class StopMatch(NamedTuple):
    """`text`: the output cut at the stop string; `stop`: the string that matched.
    Both None when no stop string completed."""

    text: str | None
    stop: str | None


_NO_MATCH = StopMatch(None, None)


class StopChecker:
    """Finds stop strings in a growing text; see the module docstring for the semantics."""

    def __init__(self, stop_strings: Iterable[str] | None, include_stop_str_in_output: bool = False) -> None:
        stops = tuple(dict.fromkeys(stop_strings or ()))
        for s in stops:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
        self.stop_strings = stops
        self.include_stop_str_in_output = include_stop_str_in_output
        self.max_stop_len = max((len(s) for s in stops), default=0)

    def __bool__(self) -> bool:
        return bool(self.stop_strings)

    def check(self, text: str, num_new_chars: int) -> StopMatch:
        """Look for a stop string that ends within the last `num_new_chars` characters of
        `text` (matches wholly inside older text are assumed reported by earlier calls)."""
        if not self.stop_strings or num_new_chars <= 0:
            return _NO_MATCH
        num_new_chars = min(num_new_chars, len(text))
        old_len = len(text) - num_new_chars
        best: tuple[int, int, str] | None = None  # (end, -len, stop): smallest wins
        for stop in self.stop_strings:
            # The earliest match that uses at least one new character.
            start = text.find(stop, max(0, old_len - len(stop) + 1))
            if start < 0:
                continue
            key = (start + len(stop), -len(stop), stop)
            if best is None or key < best:
                best = key
        if best is None:
            return _NO_MATCH
        end, neg_len, stop = best
        cut = end if self.include_stop_str_in_output else end + neg_len
        return StopMatch(text[:cut], stop)

    def holdback(self, text: str) -> int:
        """Number of trailing characters of `text` that could be the start of a stop string
        (the longest proper prefix of any stop string that `text` ends with)."""
        best = 0
        for stop in self.stop_strings:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
