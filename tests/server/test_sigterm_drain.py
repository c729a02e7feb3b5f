"""SIGTERM: new requests are refused (503), in-flight streams finish within the drain
timeout (or are aborted when it runs out), and the process exits 0."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .helpers import ServerProcess

ARGS = ["--kv-cache-bytes", str(64 << 20)]


@pytest.fixture(scope="module")
def drain_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("drain-logs")
    # Both load at once; each test signals its own.
    patient = ServerProcess([*ARGS, "--drain-timeout", "60"], logs / "patient.log")
    hasty = ServerProcess([*ARGS, "--drain-timeout", "2"], logs / "hasty.log")
    yield patient, hasty
    for p in (patient, hasty):
        p.stop(5)


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any] | str]:
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


def _wait_draining(url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(url + "/health", timeout=10)
        if r.status_code == 503:
            assert r.json() == {"status": "draining"}
            return
        time.sleep(0.05)
    raise AssertionError("the server never started draining")


def _stream_then_sigterm(server: ServerProcess, max_tokens: int) -> tuple[list[Any], float]:
    """Start a stream, SIGTERM the server after its first chunk, check that a new request is
    refused, and read the stream to its end. Returns (events after the first, signal time)."""
    url = server.url
    body = {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=url, timeout=120) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = _events(r.iter_lines())
        next(events)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _wait_draining(url)
        refused = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_draining"
        assert server.proc.poll() is None, "exited while a stream was still running"
        return list(events), signalled


def test_sigterm_lets_the_stream_finish_then_exits_0(drain_servers: tuple[ServerProcess, ServerProcess]) -> None:
    server = drain_servers[0]
    rest, signalled = _stream_then_sigterm(server, max_tokens=64)
    assert rest[-1] == "[DONE]"
    finishes = [c["finish_reason"] for e in rest[:-1] for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["length"]
    assert rest[-2]["usage"]["completion_tokens"] == 64
    assert server.proc.wait(timeout=60) == 0, server.output()[-2000:]
    assert time.monotonic() - signalled < 60
    assert "draining" in server.output()


def test_drain_timeout_aborts_the_rest_then_exits_0(drain_servers: tuple[ServerProcess, ServerProcess]) -> None:
    server = drain_servers[1]  # --drain-timeout 2
    rest, signalled = _stream_then_sigterm(server, max_tokens=1000)
    assert rest[-1] == "[DONE]"
    finishes = [c["finish_reason"] for e in rest[:-1] for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["abort"]
    assert rest[-2]["usage"]["completion_tokens"] < 1000
    assert server.proc.wait(timeout=30) == 0, server.output()[-2000:]
    assert 2 <= time.monotonic() - signalled < 20
