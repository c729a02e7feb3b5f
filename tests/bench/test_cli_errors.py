"""User errors end with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import socket

import pytest

from titaninfer.cli import main


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("titaninfer: error:")
    return err[0]


def test_unreachable_endpoint(tmp_path, capsys) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    rc = main(["bench", "serve", "--endpoint", url, "-n", "2", "--no-sol", "--no-progress",
               "--out", str(tmp_path / "p")])
    assert rc == 2
    assert "unreachable" in _one_line_error(capsys)


@pytest.mark.parametrize("argv, needle", [
    (["bench", "offline", "--workload", "nope"], "unknown workload"),
    (["bench", "offline", "--input-len-range", "10:x"], "range"),
    (["bench", "offline", "--engines", "titaninfer,vllm"], "unknown engine"),
    (["bench", "serve", "--engines", "openai"], "--endpoint"),
    (["bench", "latency", "--request-rate", "5"], "request-rate"),
    (["bench", "offline", "--num-requests", "0"], "num-requests"),
    (["bench", "latency", "--model", "dummy:no-such-shape", "--no-sol"], "unknown dummy model"),
    (["bench", "serve", "--endpoint", "ftp://x", "--no-sol"], "endpoint"),
])
def test_bad_parameters(argv, needle, capsys) -> None:
    assert main([*argv, "--no-progress"]) == 2
    assert needle in _one_line_error(capsys)
