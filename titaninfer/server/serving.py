"""The serving loop shared by /v1/completions and /v1/chat/completions.

    admit (429) -> GenerationGroup (one engine request per prompt)
      -> non-streaming: wait for every prompt to finish, watching the client
      -> streaming: wait for the first output (so input errors are still a 400), then SSE
         deltas computed from the engine's cumulative outputs, per choice
    -> release the admission, abort whatever is unfinished, record metrics and the log line

Choices are indexed prompt-major: prompt i, sample j -> i * n + j.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from titaninfer.engine.async_engine import EngineDeadError
from titaninfer.server import sse
from titaninfer.server.errors import APIError, bad_request, error_body
from titaninfer.server.formats import ResponseFormat, envelope, usage
from titaninfer.server.generation import ClientGone, GenerationGroup, wait_watching_client
from titaninfer.server.request_log import RequestRecord, record_of
from titaninfer.server.state import ServerState
from titaninfer.types import RequestOutput, SamplingParams


@dataclass
class Job:
    """One generation request, validated and tokenized."""

    id_prefix: str  # "cmpl" or "chatcmpl"
    prompts: list[list[int]]
    params: SamplingParams
    fmt: ResponseFormat
    stream: bool = False
    include_usage: bool = False
    priority: int = 0
    prompt_text: str | None = None  # for the log line, only with --log-prompts
    response_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.response_id:
            self.response_id = f"{self.id_prefix}-{uuid.uuid4().hex}"


@dataclass
class _Cursor:
    """What one choice has streamed so far."""

    chars: int = 0
    tokens: int = 0
    finished: bool = False


class _Run:
    """Book-keeping for one job while it runs."""

    def __init__(self, state: ServerState, job: Job, record: RequestRecord) -> None:
        self.state = state
        self.job = job
        self.record = record
        self.start = time.monotonic()
        self.latest: dict[int, RequestOutput] = {}
        self.num_prompt_tokens = sum(len(p) for p in job.prompts)
        record.request_id = job.response_id
        record.prompt_tokens = self.num_prompt_tokens
        if state.config.log_prompts and job.prompt_text is not None:
            record.prompt = job.prompt_text

    def seen(self, index: int, out: RequestOutput) -> None:
        if self.record.ttft_s is None:
            self.record.ttft_s = time.monotonic() - self.start
        self.latest[index] = out

    def completion_tokens(self) -> int:
        return sum(len(o.token_ids) for out in self.latest.values() for o in out.outputs)

    def finish(self, group: GenerationGroup, outcome: str | None = None) -> None:
        self.record.completion_tokens = self.completion_tokens()
        reasons = sorted({o.finish_reason or "abort" for out in self.latest.values() for o in out.outputs})
        self.record.finish = outcome or (",".join(reasons) if reasons else None)
        for out in group.finals.values():
            self.state.metrics.observe_request(out.metrics, [o.finish_reason or "abort" for o in out.outputs])


def _check_fits(state: ServerState, job: Job) -> None:
    # The engine would refuse these too, but only after other prompts of a batch may have
    # started streaming; checking here keeps every input error a plain 400.
    vocab = state.limits.vocab_size
    max_tokens = job.params.max_tokens or 0
    for p in job.prompts:
        if any(t >= vocab for t in p):
            raise bad_request(f"token ids must be below the vocabulary size {vocab}", "prompt")
        if len(p) + max_tokens > state.limits.kv_capacity_tokens:
            raise bad_request(f"the request needs {len(p) + max_tokens} tokens of KV cache, more than "
                              f"the server's cache holds ({state.limits.kv_capacity_tokens})", "max_tokens")


async def serve(request: Request, state: ServerState, job: Job) -> Response:
    _check_fits(state, job)
    key, ticket = state.admission.admit(len(job.prompts) * job.params.n)
    run = _Run(state, job, record_of(request))
    ticket.engine_ids = [f"{job.response_id}-{i}" for i in range(len(job.prompts))]
    group = GenerationGroup(state.engine, job.prompts, job.params, ticket.engine_ids, job.priority)
    handed_to_stream = False
    try:
        if job.stream:
            first = await _first_output(request, state, group)
            run.seen(*first)
            handed_to_stream = True

            async def on_close() -> None:
                group.cancel()
                state.admission.release(key)
                if run.record.finish is None:  # the stream did not end by itself
                    run.finish(group, "disconnected")
                await group.aclose()

            return sse.SSEResponse(_stream_body(run, group, first), on_close)
        await wait_watching_client(request, _collect(run, group), state.config.disconnect_poll_s)
        run.finish(group)
        return JSONResponse(_full_body(run, group))
    except ClientGone:
        run.finish(group, "disconnected")
        return Response(status_code=499)  # nobody is listening; the log line shows why
    except ValueError as e:  # the engine refused the input
        run.finish(group, "rejected")
        raise bad_request(str(e)) from None
    except EngineDeadError as e:
        run.finish(group, "engine_dead")
        raise APIError(503, str(e), err_type="server_error") from None
    finally:
        if not handed_to_stream:
            # Synchronous clean-up first: it must happen even if this task is being cancelled.
            group.cancel()
            state.admission.release(key)
            await group.aclose()


async def _first_output(request: Request, state: ServerState,
                        group: GenerationGroup) -> tuple[int, RequestOutput]:
    first = await wait_watching_client(request, group.next(), state.config.disconnect_poll_s)
    if first is None:  # cannot happen: every request yields at least its final output
        raise RuntimeError("a request finished without any output")
    return first


async def _collect(run: _Run, group: GenerationGroup) -> None:
    while (item := await group.next()) is not None:
        run.seen(*item)


def _full_body(run: _Run, group: GenerationGroup) -> dict[str, Any]:
    job = run.job
    choices = []
    for i in range(len(job.prompts)):
        for o in group.finals[i].outputs:
            choices.append(job.fmt.choice(i * job.params.n + o.index, o.text, o.logprobs,
                                          o.finish_reason, o.stop_reason))
    return envelope(job.fmt.object_name, job.response_id, run.state.created, run.state.model_name,
                    choices, usage(run.num_prompt_tokens, run.completion_tokens()))


def _chunk(run: _Run, choices: list[dict[str, Any]], usage_body: dict[str, int] | None = None) -> bytes:
    body = envelope(run.job.fmt.chunk_object_name, run.job.response_id, run.state.created,
                    run.state.model_name, choices, usage_body)
    if not run.job.include_usage:
        body.pop("usage")
    return sse.event(body)


def _deltas(run: _Run, cursors: dict[int, _Cursor], prompt_index: int,
            out: RequestOutput) -> list[dict[str, Any]]:
    job = run.job
    choices = []
    for o in out.outputs:
        index = prompt_index * job.params.n + o.index
        cur = cursors.setdefault(index, _Cursor())
        if cur.finished:
            continue
        text = o.text[cur.chars:]
        lps = o.logprobs[cur.tokens:] if o.logprobs is not None else None
        if not text and not lps and o.finish_reason is None:
            continue
        choices.append(job.fmt.delta(index, text, lps, cur.chars, o.finish_reason, o.stop_reason))
        cur.chars = len(o.text)
        cur.tokens = len(o.token_ids) if o.logprobs is None else len(o.logprobs)
        cur.finished = o.finish_reason is not None
    return choices


async def _stream_body(run: _Run, group: GenerationGroup, first: tuple[int, RequestOutput]):
    job = run.job
    cursors: dict[int, _Cursor] = {}
    try:
        starts = [d for i in range(len(job.prompts) * job.params.n)
                  if (d := job.fmt.start_delta(i)) is not None]
        if starts:
            yield _chunk(run, starts)
        item: tuple[int, RequestOutput] | None = first
        while item is not None:
            run.seen(*item)
            choices = _deltas(run, cursors, *item)
            if choices:
                yield _chunk(run, choices)
            item = await group.next()
        if job.include_usage:
            yield _chunk(run, [], usage(run.num_prompt_tokens, run.completion_tokens()))
        run.finish(group)
    except (ValueError, EngineDeadError) as e:
        # Headers are out already: report in-band, as OpenAI-compatible servers do.
        run.finish(group, "error")
        status = 503 if isinstance(e, EngineDeadError) else 400
        yield sse.event(error_body(status, str(e)))
    yield sse.DONE
