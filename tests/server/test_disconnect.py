"""A client that goes away aborts its request: the engine frees its KV blocks long before
the request would have finished (read back through /metrics)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import httpx

from .helpers import ServerProcess, read_metrics, wait_idle

LONG = {"prompt": "Count slowly: 1, 2, 3,", "max_tokens": 256, "temperature": 0, "ignore_eos": True}
GEN = "titaninfer_generation_tokens_total"


def _wait_running(url: str, timeout_s: float = 60.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = read_metrics(url)
        if m["titaninfer_num_requests_running"] >= 1 and m["titaninfer_kv_blocks_used"] > 0:
            return m
        time.sleep(0.05)
    raise AssertionError("the request never started running")


def test_streaming_client_disconnect_frees_blocks(server: ServerProcess) -> None:
    before = wait_idle(server.url)
    with httpx.Client(base_url=server.url, timeout=60.0) as c, \
            c.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # kept referenced: closing this iterator closes the connection
        events = 0
        while events < 3:
            events += next(lines).startswith("data: {")
        running = read_metrics(server.url)
        assert running["titaninfer_num_requests_running"] >= 1 and running["titaninfer_kv_blocks_used"] > 0
    after = wait_idle(server.url, timeout_s=20)
    assert after[GEN] - before[GEN] < 200, "the stream kept generating after its client left"


def test_non_streaming_client_disconnect_frees_blocks(server: ServerProcess) -> None:
    before = wait_idle(server.url)
    url = urlparse(server.url)
    body = json.dumps(LONG).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection((url.hostname, url.port))
    try:
        sock.sendall(head + body)
        _wait_running(server.url)
    finally:
        sock.close()
    after = wait_idle(server.url, timeout_s=20)
    assert after[GEN] - before[GEN] < 200, "the request kept generating after its client left"
    deadline = time.monotonic() + 10
    while "status=499" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(ln for ln in server.output().splitlines() if "status=499" in ln)
    assert "finish=disconnected" in line and "POST /v1/completions" in line
