"""The guarded server: API key (from TITANINFER_API_KEY), admission limits, prompt logging,
and a bounded schema fuzz run that must find no 5xx."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from .helpers import API_KEY, ServerProcess

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {API_KEY}"},
    {"Authorization": API_KEY}, {"Authorization": f"Bearer {API_KEY}x"}, {"Authorization": "Bearer"},
], ids=["none", "wrong", "scheme", "bare", "longer", "empty"])
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
    ("POST", "/tokenize"), ("GET", "/metrics"), ("GET", "/version"), ("GET", "/openapi.json"),
    ("GET", "/no/such/route"),
])
def test_401_without_the_right_key(guarded_server: ServerProcess, method: str, path: str,
                                   headers: dict[str, str]) -> None:
    r = httpx.request(method, guarded_server.url + path, headers=headers, json={"prompt": "x"}, timeout=30)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_key_and_the_key_works(guarded_server: ServerProcess) -> None:
    assert httpx.get(guarded_server.url + "/health", timeout=30).json() == {"status": "ok"}
    import openai

    good = openai.OpenAI(base_url=f"{guarded_server.url}/v1", api_key=API_KEY, max_retries=0)
    assert good.completions.create(model=good.models.list().data[0].id, prompt="Hi", max_tokens=2).usage
    bad = openai.OpenAI(base_url=f"{guarded_server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


async def _flood(url: str, count: int) -> list[httpx.Response]:
    body = {"prompt": "Tell me a story.", "n": 2, "max_tokens": 4, "temperature": 0.5, "ignore_eos": True}
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as c:
        return await asyncio.gather(*[c.post("/v1/completions", json=body) for _ in range(count)])


def test_429_beyond_the_waiting_limit(guarded_server: ServerProcess) -> None:
    # Capacity is 2 running sequences and no waiting room; each request needs 2 (n=2).
    responses = asyncio.run(_flood(guarded_server.url, 8))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    for r in responses:
        if r.status_code == 429:
            err = r.json()["error"]
            assert err["type"] == "rate_limit_error" and "busy" in err["message"]
            assert r.headers["retry-after"] == "1"
        else:
            assert len(r.json()["choices"]) == 2
    # n larger than the whole capacity can never be admitted: a 400, not a 429.
    big = httpx.post(guarded_server.url + "/v1/completions", headers=AUTH, timeout=30,
                     json={"prompt": ["a", "b"], "n": 2, "max_tokens": 1})
    assert big.status_code == 400 and big.json()["error"]["param"] == "n"


def test_request_log_lines(guarded_server: ServerProcess, server: ServerProcess) -> None:
    marker = "zebra-marker-7741"
    for s, headers in ((guarded_server, AUTH), (server, {})):
        r = httpx.post(s.url + "/v1/completions", headers=headers, timeout=60,
                       json={"prompt": f"Say {marker}", "max_tokens": 3, "temperature": 0})
        assert r.status_code == 200
        rid = r.json()["id"]
        deadline = time.monotonic() + 10  # the line is written just after the response is sent
        while not (lines := [ln for ln in s.output().splitlines() if f"id={rid} " in ln]):
            assert time.monotonic() < deadline, "no log line for the request"
            time.sleep(0.05)
        assert len(lines) == 1, lines
        line = lines[0]
        for field in ("status=200", "prompt_tokens=", "completion_tokens=3", "ttft_ms=", "duration_ms="):
            assert field in line, line
        # Prompts are logged only with --log-prompts (the guarded server has it).
        assert (marker in line) == (s is guarded_server), line
    assert marker not in server.output()


def test_schema_fuzz_finds_no_server_error(guarded_server: ServerProcess) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    url = guarded_server.url
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=AUTH, timeout=30)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/tokenize"}
    for op in operations:
        strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=url, headers=AUTH, checks=[not_a_server_error], timeout=60)

        check()
