"""Request bodies of the HTTP API as pydantic models, in OpenAI's (and vLLM's) shapes.

The static bounds here (numbers in range, non-empty lists) also become the published
OpenAPI schema; limits that depend on the server's configuration or the model (max_tokens,
n, context length, vocabulary) are checked later, in sampling.py, and answered with 400.
Every string is checked to be encodable as UTF-8: JSON may carry lone surrogates, which
the tokenizer cannot take. Unknown fields are ignored, as OpenAI's API does.
Responses are plain dicts built by the routes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utf8(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the string is not valid unicode (lone surrogate)") from None
    return s


Text = Annotated[str, AfterValidator(_utf8)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Priority = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
MaxTokens = Annotated[int, Field(ge=1, le=1 << 20)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingFields(_Body):
    """Fields common to /v1/completions and /v1/chat/completions."""

    model: Text | None = None
    max_tokens: MaxTokens | None = None
    n: Annotated[int, Field(ge=1, le=128)] = 1
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=-1, le=1 << 20)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    seed: Seed | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    stop: Text | Annotated[list[Text], Field(max_length=1024)] | None = None
    stop_token_ids: Annotated[list[TokenId], Field(max_length=1024)] | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0, le=1 << 20)] = 0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    priority: Priority = 0
    user: Text | None = None
    logit_bias: dict[Text, float] | None = None  # accepted only when empty: not supported


class CompletionRequest(_SamplingFields):
    """POST /v1/completions. `prompt` is a string, a list of token ids, a list of strings or
    a list of token-id lists; a batch gives choices indexed prompt-major (prompt i, sample j
    -> index i * n + j)."""

    prompt: Text | TokenIds | Annotated[list[Text], Field(min_length=1)] | \
        Annotated[list[TokenIds], Field(min_length=1)]
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False  # not supported (needs prompt logprobs)
    suffix: Text | None = None  # not supported
    best_of: Annotated[int, Field(ge=1, le=128)] | None = None  # only best_of == n


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant"]
    content: Text | list[TextPart] | None = None
    name: Text | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions. Messages are rendered with the model's chat template."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: MaxTokens | None = None  # wins over max_tokens when both are given
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    add_generation_prompt: bool = True
    tools: list[dict[str, Any]] | None = None  # accepted only when empty: not supported
    tool_choice: Text | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None  # only {"type": "text"}


class TokenizeCompletionRequest(_Body):
    """POST /tokenize with a prompt (vLLM's shape)."""

    model: Text | None = None
    prompt: Text
    add_special_tokens: bool = True


class TokenizeChatRequest(_Body):
    """POST /tokenize with chat messages (vLLM's shape): the templated prompt's tokens."""

    model: Text | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    add_generation_prompt: bool = True


class DetokenizeRequest(_Body):
    model: Text | None = None
    tokens: Annotated[list[TokenId], Field(max_length=1 << 20)]
