"""Real servers for the server tests: `titaninfer serve` subprocesses running SmolLM2 on
loopback ports chosen by the OS (--port 0; the server prints the port it got).

- `server`: the shared, open server (one per session).
- `guarded_server`: API key from TITANINFER_API_KEY, tiny limits (2 running sequences, no
  waiting room, max_tokens <= 4, n <= 2): auth, 429 and the schema fuzz run against it.
Both start together on first use, so their model loads overlap.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .helpers import API_KEY, GUARDED_ARGS, MAIN_ARGS, ServerProcess, wait_idle


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("server-logs")
    procs = {
        "main": ServerProcess(MAIN_ARGS, logs / "main.log"),
        "guarded": ServerProcess(GUARDED_ARGS, logs / "guarded.log", {"TITANINFER_API_KEY": API_KEY}),
    }
    yield procs
    for p in procs.values():
        rc = p.stop()
        assert rc == 0, f"server exited with {rc}:\n{p.output()[-3000:]}"


@pytest.fixture(scope="session")
def server(_servers: dict[str, ServerProcess]) -> ServerProcess:
    return _servers["main"]


@pytest.fixture(scope="session")
def guarded_server(_servers: dict[str, ServerProcess]) -> ServerProcess:
    return _servers["guarded"]


@pytest.fixture(scope="session")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120.0) as client:
        yield client


@pytest.fixture(scope="session")
def client(server: ServerProcess):  # noqa: ANN201 - openai.OpenAI
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120.0)


@pytest.fixture(scope="session")
def model_name(http: httpx.Client) -> str:
    return http.get("/v1/models").json()["data"][0]["id"]


@pytest.fixture(scope="session")
def tokenizer():  # noqa: ANN201 - titaninfer.tokenizer.Tokenizer
    """The model's tokenizer, built in the test process (not the server's)."""
    from titaninfer.loader.gguf_file import read_gguf
    from titaninfer.loader.model_loader import default_model_path
    from titaninfer.tokenizer import Tokenizer

    return Tokenizer.from_gguf(read_gguf(default_model_path()).metadata)


@pytest.fixture(autouse=True)
def _engine_idle_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that used the shared server leaves it with no request and no KV block."""
    yield
    if "server" in request.fixturenames:
        wait_idle(request.getfixturevalue("server").url)
