"""Incremental detokenization: turn a growing list of output ids into final text pieces.

Decoding a whole sequence again for every new token is O(n^2); decoding one token alone is
wrong (a UTF-8 character can be split across byte-level tokens, and SentencePiece decoders
strip the leading space of the *first* token they see). We use vLLM's two-offset method:

    output ids:  ... | prefix window | new tokens
                     ^prefix_offset  ^read_offset

`prefix_text = decode(ids[prefix_offset:read_offset])`, `new_text = decode(ids[prefix_offset:])`
and the newly final text is `new_text[len(prefix_text):]`. Both decodes start at the same
token, so any first-token effect (the stripped SentencePiece space) hits both alike and
cancels. When `new_text` ends with U+FFFD the last character is (probably) an incomplete
UTF-8 sequence: nothing is emitted and the offsets stay, so the next token completes it. Only
when text is emitted do the offsets move on: `prefix_offset = read_offset; read_offset = len`.
Each token costs one decode of a window of a few tokens: O(new tokens) per call.

Byte-fallback vocabularies (SentencePiece, <0xXX> tokens) need one more rule: their decoder
turns a whole run of byte tokens into U+FFFDs (one per byte) as soon as the run is not valid
UTF-8, valid bytes included, so a later byte can change text already seen ("^" followed by
<0xE6> and a letter decodes to "\ufffd\ufffd" + letter). While the output ends in such a run
(ignoring special tokens that are skipped) nothing of the run is emitted; it is final once a
token of another kind closes it. Runs are short (one character, up to 4 bytes), so the delay
is at most one token in practice.

Invariant (tested with hypothesis): for any id sequence,
`"".join(pieces) + flush() == tokenizer.decode(output_ids, skip_special_tokens)`.
The output is decoded on its own, exactly like `decode(output_ids)`: the prompt does not
change the text (e.g. the space of a leading "▁Hello" is stripped, as transformers does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

_REPLACEMENT = "\ufffd"


class _Decoder(Protocol):
    """What the detokenizer needs from a tokenizer (titaninfer.tokenizer.Tokenizer has it)."""

    byte_fallback_ids: frozenset[int]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def is_special(self, token_id: int) -> bool: ...


class IncrementalDetokenizer:
    """Turns output token ids into text as they arrive; one instance per request.

    `add_tokens(ids)` returns only the text that became final with these ids; `.text` is all
    output text so far. Call `flush()` once generation has ended: it returns what is still
    held back (a trailing U+FFFD or an open byte-fallback run), which no later token can
    change any more. Without it, `.text` may lack those last characters."""

    def __init__(self, tokenizer: _Decoder, prompt_token_ids: Sequence[int] = (),
                 skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._byte_ids = tokenizer.byte_fallback_ids
        self.skip_special_tokens = skip_special_tokens
        # Kept for the caller's bookkeeping; the output text is defined without it (see above).
        self.prompt_token_ids: list[int] = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.text = ""
        self._prefix_offset = 0
        self._read_offset = 0
        self._prefix_text = ""

    def add_tokens(self, token_ids: Iterable[int]) -> str:
        """Append output ids; return the newly final text (maybe ""), also added to `.text`."""
        pieces: list[str] = []
        for token_id in token_ids:
            self.output_token_ids.append(int(token_id))
            piece = self._step(final=False)
            if piece:
                pieces.append(piece)
        out = "".join(pieces)
        self.text += out
        return out

    def flush(self) -> str:
        """Emit whatever is held back (at most a few U+FFFD); call once generation ended."""
        out = self._step(final=True)
        self.text += out
        return out

    def _step(self, final: bool) -> str:
        ids = self.output_token_ids
        if self._read_offset == len(ids):
            return ""
        if not final and self._byte_ids and self._in_byte_run():
            return ""
        new_text = self._tokenizer.decode(ids[self._prefix_offset:], skip_special_tokens=self.skip_special_tokens)
        if len(new_text) <= len(self._prefix_text) or (not final and new_text.endswith(_REPLACEMENT)):
            # Nothing visible yet (e.g. a skipped special token) or a character still incomplete:
            # keep the window so the next token is decoded together with these bytes.
            if final:
                self._read_offset = len(ids)
            return ""
        piece = new_text[len(self._prefix_text):]
        self._prefix_offset = self._read_offset
        self._read_offset = len(ids)
        self._prefix_text = self._tokenizer.decode(ids[self._prefix_offset:self._read_offset],
                                                   skip_special_tokens=self.skip_special_tokens)
        return piece

    def _in_byte_run(self) -> bool:
        """Does the output end in a byte-fallback run that the next token may extend?

        Only tokens after read_offset need a look: text was last emitted when no run was open."""
        ids = self.output_token_ids
        for i in range(len(ids) - 1, self._read_offset - 1, -1):
            if self.skip_special_tokens and self._tokenizer.is_special(ids[i]):
                continue  # dropped before decoding: the run goes on across it
            return ids[i] in self._byte_ids
        return False
