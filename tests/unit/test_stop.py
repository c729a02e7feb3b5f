"""StopChecker against a brute-force model that checks the text after every character."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from titaninfer.tokenizer import StopChecker, StopMatch


def brute_force(text: str, stops: list[str], include: bool) -> tuple[str, str] | None:
    """Grow the text one character at a time; the first time it ends with a stop string
    (the longest, if several end there) is the match."""
    for end in range(1, len(text) + 1):
        hits = [s for s in stops if text[:end].endswith(s)]
        if hits:
            stop = max(hits, key=len)
            return (text[:end] if include else text[:end - len(stop)]), stop
    return None


ALPHABET = "ab\n😀é"
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), min_size=1, max_size=4)


@settings(max_examples=500, deadline=None)
@given(stops=stop_lists, text=st.text(alphabet=ALPHABET, max_size=30),
       cuts=st.lists(st.integers(0, 30), max_size=10), include=st.booleans())
def test_incremental_check_equals_brute_force(stops: list[str], text: str, cuts: list[int], include: bool) -> None:
    checker = StopChecker(stops, include_stop_str_in_output=include)
    bounds = sorted({c for c in cuts if 0 < c < len(text)} | {len(text)})
    found, prev = None, 0
    for end in bounds:
        result = checker.check(text[:end], end - prev)
        if result.stop is not None:
            found = (result.text, result.stop)
            break
        prev = end
    assert found == brute_force(text, stops, include)


@settings(max_examples=500, deadline=None)
@given(stops=stop_lists, text=st.text(alphabet=ALPHABET, max_size=30), more=st.text(alphabet=ALPHABET, max_size=10))
def test_holdback_never_shows_text_that_is_later_cut(stops: list[str], text: str, more: str) -> None:
    checker = StopChecker(stops)
    if brute_force(text, stops, False) is not None:
        return  # generation would already have stopped
    shown = text[:len(text) - checker.holdback(text)]
    # Whatever comes next, the final text still starts with what was shown.
    match = brute_force(text + more, stops, False)
    final = match[0] if match else text + more
    assert final.startswith(shown)
    # And the holdback is minimal: it is exactly the longest stop-string prefix at the end.
    expected = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    assert checker.holdback(text) == expected


def test_stop_straddles_tokens() -> None:
    checker = StopChecker(["###", "\nUser:"])
    text = ""
    for piece, expect in (("Hello #", None), ("#", None), ("# tail", StopMatch("Hello ", "###"))):
        text += piece
        result = checker.check(text, len(piece))
        assert result == (expect or StopMatch(None, None))
    text = "answer\nUs"
    assert checker.check(text, 3) == (None, None) and checker.holdback(text) == 3
    assert checker.check(text + "er: next", 8) == ("answer", "\nUser:")


def test_earliest_completion_wins_then_longest() -> None:
    checker = StopChecker(["bcd", "cd", "x"])
    assert checker.check("abcdx", 5) == ("a", "bcd")  # "bcd" and "cd" end together: longest wins
    checker = StopChecker(["abcdef", "cd"])
    assert checker.check("abcdef", 6) == ("ab", "cd")  # "cd" completes first
    with_stop = StopChecker(["cd"], include_stop_str_in_output=True)
    assert with_stop.check("abcdef", 3) == ("abcd", "cd")


def test_only_recent_text_is_searched() -> None:
    checker = StopChecker(["stop"])
    old = "stop " + "x" * 100  # an old match is not reported again
    assert checker.check(old + "y", 1) == (None, None)
    assert checker.check(old + "sto", 3) == (None, None)
    assert checker.check(old + "stop", 1) == (old, "stop")


def test_validation_and_empty() -> None:
    for bad in ([""], ["ok", ""], [None]):
        with pytest.raises(ValueError):
            StopChecker(bad)  # type: ignore[arg-type]
    empty = StopChecker(None)
    assert not empty and empty.check("anything", 3) == (None, None) and empty.holdback("abc") == 0
    dup = StopChecker(["a", "a", "b"])
    assert dup.stop_strings == ("a", "b") and dup.max_stop_len == 1
    assert StopChecker(["a"]).check("xa", 0) == (None, None)
