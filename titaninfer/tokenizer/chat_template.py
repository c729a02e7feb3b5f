"""Render a model's Jinja chat template the way Hugging Face transformers does.

Same environment as transformers: a sandboxed (immutable) Jinja environment with
`trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, a `{% generation %}` block
(rendered as its plain body: we never need the assistant-token mask), the `tojson` filter
with transformers' defaults (non-ASCII kept), and the globals `raise_exception(msg)` and
`strftime_now(fmt)`. The template sees `messages`, `tools`, `add_generation_prompt`,
`bos_token`, `eos_token` and any extra keyword argument.

Every failure (a malformed message, a syntax error, `raise_exception`, an undefined
variable used in an operation, a sandbox violation) comes out as ValueError with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Used when the model ships no template. Plain "role: content" lines, so it means something
# to a base model too; documented in Tokenizer.apply_chat_template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class _TemplateRaised(Exception):
    """raise_exception() called by a template; carries the template's own message."""


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training masks;
    for inference the block is just its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return str(caller())


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' filter: unlike Jinja's built-in, it keeps non-ASCII and does not
    # HTML-escape, which is what the models were trained on.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[_GenerationBlock, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat template syntax error (line {e.lineno}): {e.message}") from None


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Check the OpenAI-style message list; return it as a list of plain dicts.

    Each message is a mapping with a string `role` and a `content` that is a string, a list
    of content parts (dicts) or None; None (or a missing content) is allowed only when the
    message carries `tool_calls`. Extra keys (name, tool_calls, tool_call_id...) pass through."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{role, content}} dicts, got {type(messages).__name__}")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {type(msg).__name__}")
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError(f"message {i} needs a non-empty string 'role'")
        content = msg.get("content")
        if content is None:
            if not msg.get("tool_calls"):
                raise ValueError(f"message {i} ({role}) needs 'content'")
        elif isinstance(content, list):
            if not all(isinstance(part, Mapping) for part in content):
                raise ValueError(f"message {i} ({role}): content parts must be dicts")
        elif not isinstance(content, str):
            raise ValueError(f"message {i} ({role}): content must be a string or a list of parts, "
                             f"got {type(content).__name__}")
        out.append(dict(msg))
    return out


def render_chat_template(template: str, messages: Any, *, add_generation_prompt: bool = True,
                         tools: list[dict[str, Any]] | None = None, bos_token: str = "",
                         eos_token: str = "", **kwargs: Any) -> str:
    """Render `template` for `messages`; ValueError (with the reason) on any failure."""
    plain = validate_messages(messages)
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
        raise ValueError("tools must be a list of JSON-schema dicts")
    compiled = _compile(template)
    try:
        return compiled.render(messages=plain, tools=tools, add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **kwargs)
    except _TemplateRaised as e:
        raise ValueError(f"chat template rejected the conversation: {e}") from None
    except jinja2.TemplateError as e:
        raise ValueError(f"chat template failed: {type(e).__name__}: {e}") from None
    except (TypeError, KeyError, AttributeError, IndexError, ZeroDivisionError) as e:
        raise ValueError(f"chat template failed: {type(e).__name__}: {e}") from None
