"""Tokenization: text <-> ids, chat templates, incremental detokenization, stop strings.

- `Tokenizer` (tokenizer.py): built from a Hugging Face folder or GGUF metadata.
- `render_chat_template` (chat_template.py): transformers-compatible Jinja rendering.
- `IncrementalDetokenizer` (detokenizer.py): streaming ids -> exact text pieces.
- `StopChecker` (stop.py): stop strings across token boundaries, with streaming holdback.

Nothing here imports transformers (it is only a test reference).
"""

from __future__ import annotations

from titaninfer.tokenizer.chat_template import FALLBACK_CHAT_TEMPLATE, render_chat_template
from titaninfer.tokenizer.detokenizer import IncrementalDetokenizer
from titaninfer.tokenizer.stop import StopChecker, StopMatch
from titaninfer.tokenizer.tokenizer import Tokenizer

__all__ = [
    "FALLBACK_CHAT_TEMPLATE",
    "IncrementalDetokenizer",
    "StopChecker",
    "StopMatch",
    "Tokenizer",
    "render_chat_template",
]
