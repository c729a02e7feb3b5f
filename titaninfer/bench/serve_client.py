"""A streaming client for any OpenAI-compatible `/v1/completions` endpoint (TitanInfer's
server, vLLM, SGLang, llama.cpp), built on aiohttp only.

Each request is sent at its arrival offset (Poisson for serving workloads, 0 for offline)
once a slot among `max_concurrency` is free; its arrival time is when it is actually sent.
Every streamed chunk that carries a choice is one token event, except a final chunk with
empty text and a finish_reason (a terminator, not a token). A chunk's arrival time is
its token's time, so TTFT = first token event - send, ITL = gaps between token events.
When the server reports usage, `output_len` is its completion_tokens count.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from titaninfer.bench.metrics import RequestRecord
from titaninfer.bench.workloads import BenchRequest

# Words that are one token each in common BPE vocabularies (with a leading space), so a
# text prompt of N words is about N tokens. Text prompts are approximate by nature.
_WORD_TEXT = (
    "the of and to in is was that for on are with as his they be at one have this from or had by "
    "not word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place "
    "made live where after back little only round man year came show every good me give our under "
    "name very through just form sentence great think say help low line differ turn cause much "
    "mean before move right boy old too same tell does set three want air well also play small "
    "end put home read hand port large spell add even land here must big high such follow act why "
    "ask men change went light kind off need house picture try us again animal point mother world "
    "near build self earth father"
)
_WORDS = _WORD_TEXT.split()


class EndpointError(ValueError):
    """The endpoint cannot be used (unreachable, wrong URL); a user error, one line."""


def ids_to_text(ids: list[int]) -> str:
    return " ".join(_WORDS[t % len(_WORDS)] for t in ids)


def normalize_endpoint(url: str) -> str:
    """'http://h:8000', '.../v1' or '.../v1/completions' -> 'http://h:8000' (the base)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EndpointError(f"bad endpoint URL {url!r}; expected http://host:port")
    path = parts.path.rstrip("/")
    for suffix in ("/completions", "/v1"):
        path = path.removesuffix(suffix)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass
class ClientConfig:
    endpoint: str  # base URL (normalize_endpoint)
    model: str | None = None  # the "model" field; None: ask GET /v1/models
    prompt_format: str = "ids"  # ids | text
    ignore_eos: bool = True
    max_concurrency: int | None = None
    api_key: str | None = None
    timeout_s: float = 600.0


async def probe(session, cfg: ClientConfig) -> str:  # type: ignore[no-untyped-def]
    """Check the endpoint answers; return the model name to send. Raises EndpointError."""
    import aiohttp

    try:
        async with session.get(cfg.endpoint + "/v1/models", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status == 200:
                data = await resp.json(content_type=None)
                models = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
                if cfg.model is None and models and models[0]:
                    return str(models[0])
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        raise EndpointError(f"endpoint {cfg.endpoint} is unreachable ({type(e).__name__}: {e})") from None
    except ValueError:
        pass  # /v1/models answered but not with JSON: the completions route may still work
    return cfg.model or "default"


async def _one(session, cfg: ClientConfig, model: str, req: BenchRequest, t0: float) -> RequestRecord:  # type: ignore[no-untyped-def]
    import aiohttp

    body = {"model": model, "prompt": req.prompt_ids if cfg.prompt_format == "ids" else ids_to_text(req.prompt_ids),
            "max_tokens": req.output_len, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    if cfg.ignore_eos:
        body["ignore_eos"] = True  # vLLM / SGLang / llama.cpp / TitanInfer extension
    rec = RequestRecord(req.index, req.prompt_len, 0, time.perf_counter() - t0)
    usage_tokens = None
    try:
        async with session.post(cfg.endpoint + "/v1/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)) as resp:
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return rec
            buf = b""
            async for raw in resp.content.iter_any():
                now = time.perf_counter() - t0
                buf += raw
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        continue
                    chunk = json.loads(payload)
                    if chunk.get("usage"):
                        usage_tokens = chunk["usage"].get("completion_tokens")
                    for choice in chunk.get("choices") or []:
                        text, reason = choice.get("text") or "", choice.get("finish_reason")
                        if reason:
                            rec.finish_reason = reason
                        if text or not reason:
                            rec.token_times_s.append(now)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        rec.error = f"{type(e).__name__}: {e}"
        return rec
    rec.finish_s = time.perf_counter() - t0
    rec.first_token_s = rec.token_times_s[0] if rec.token_times_s else None
    rec.output_len = usage_tokens if usage_tokens is not None else len(rec.token_times_s)
    return rec


async def run_requests(cfg: ClientConfig, requests: list[BenchRequest],
                       progress: bool = False) -> tuple[list[RequestRecord], float, str]:
    """Send every request (see the module docstring); returns (records in request order,
    duration from t = 0 to the last finish, the model name used)."""
    import aiohttp
    from tqdm import tqdm

    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    limit = cfg.max_concurrency or len(requests)
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        model = await probe(session, cfg)
        sem = asyncio.Semaphore(limit)
        bar = tqdm(total=len(requests), desc="openai", unit="req", disable=not progress)
        t0 = time.perf_counter()

        async def task(r: BenchRequest) -> RequestRecord:
            await asyncio.sleep(max(0.0, t0 + r.arrival_offset_s - time.perf_counter()))
            async with sem:
                rec = await _one(session, cfg, model, r, t0)
            bar.update(1)
            return rec

        records = await asyncio.gather(*(task(r) for r in requests))
        bar.close()
    done = [r.finish_s for r in records if r.finish_s is not None]
    return list(records), max(done) if done else time.perf_counter() - t0, model
