"""Turns each sequence's new tokens into text: incremental detokenization, stop strings,
logprobs and timing. One `SequenceState` per generated sequence (n > 1 gives several).

Stop strings are matched across token boundaries and cut from the text; while a sequence
streams, the last few characters that could still start a stop string are held back.
"""

from __future__ import annotations

from titaninfer.tokenizer import IncrementalDetokenizer, StopChecker, Tokenizer
from titaninfer.types import CompletionOutput, FinishReason, SamplingParams, TokenLogprobs


class SequenceState:
    def __init__(self, index: int, tokenizer: Tokenizer | None, prompt_token_ids: list[int],
                 params: SamplingParams) -> None:
        self.index = index
        self.params = params
        self.token_ids: list[int] = []
        self.text = ""
        self.logprobs: list[TokenLogprobs] | None = [] if params.logprobs is not None else None
        self.finish_reason: FinishReason | None = None
        self.stop_reason: int | str | None = None
        self._detok: IncrementalDetokenizer | None = None
        self._stop: StopChecker | None = None
        if tokenizer is not None:
            self._detok = IncrementalDetokenizer(tokenizer, prompt_token_ids,
                                                 skip_special_tokens=params.skip_special_tokens)
            if params.stop_strings:
                self._stop = StopChecker(params.stop_strings, params.include_stop_str_in_output)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def append(self, token_id: int, logprobs: TokenLogprobs | None, detokenize: bool = True) -> str | None:
        """Add one token; returns the stop string it completed, if any."""
        self.token_ids.append(token_id)
        if self.logprobs is not None and logprobs is not None:
            self.logprobs.append(logprobs)
        if self._detok is None or not detokenize:
            return None
        return self._add_text(self._detok.add_tokens([token_id]))

    def _add_text(self, new_text: str) -> str | None:
        if not new_text:
            return None
        self.text += new_text
        if self._stop is not None:
            truncated, matched = self._stop.check(self.text, len(new_text))
            if matched is not None:
                self.text = truncated if truncated is not None else self.text
                return matched
        return None

    def finish(self, reason: FinishReason, stop_reason: int | str | None) -> None:
        """Mark finished; text the detokenizer still held (an incomplete character at the
        very end) is released, unless a stop string already ended the text."""
        if self._detok is not None and not (reason is FinishReason.STOP and isinstance(stop_reason, str)):
            matched = self._add_text(self._detok.flush())
            if matched is not None:
                stop_reason = matched
        self.finish_reason = reason
        self.stop_reason = stop_reason

    def visible_text(self) -> str:
        """Text safe to show now: all of it once finished, minus a possible stop-string
        prefix at the end while still running."""
        if self.finished or self._stop is None:
            return self.text
        hold = self._stop.holdback(self.text)
        return self.text[: len(self.text) - hold] if hold else self.text

    def to_output(self) -> CompletionOutput:
        return CompletionOutput(
            index=self.index,
            text=self.visible_text(),
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason.value if self.finish_reason else None,
            stop_reason=self.stop_reason,
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
        )
