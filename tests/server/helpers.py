"""Helpers for the server tests: a `titaninfer serve` subprocess and /metrics readers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
API_KEY = "test-secret-key"
_READY = re.compile(r"ready on (http://\S+)")
_LAUNCH = "import sys; from titaninfer.cli import main; sys.exit(main(sys.argv[1:]))"
# Small KV pools keep memory low; the main one still holds 50 concurrent requests.
MAIN_ARGS = ["--kv-cache-bytes", str(256 << 20), "--max-num-seqs", "64", "--max-tokens-limit", "256",
             "--max-n", "8", "--max-body-bytes", str(1 << 20)]
GUARDED_ARGS = ["--kv-cache-bytes", str(64 << 20), "--max-num-seqs", "2", "--max-waiting-requests", "0",
                "--max-tokens-limit", "4", "--max-n", "2", "--max-body-bytes", str(64 << 10), "--log-prompts"]


class ServerProcess:
    """One `titaninfer serve` subprocess; its output goes to a log file the tests can read."""

    def __init__(self, args: list[str], log_path: Path, env_extra: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TITANINFER_API_KEY"}
        env.update({"TITANINFER_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}, **(env_extra or {}))
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
        cmd = [sys.executable, "-c", _LAUNCH, "serve", "--device", "cpu", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._wait_ready(300.0)
        return self._url

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = _READY.search(self.output())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.output()[-3000:]}")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def read_metrics(base_url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Unlabelled samples of /metrics by name (counters keep their _total suffix)."""
    text = httpx.get(f"{base_url}/metrics", headers=headers, timeout=30.0).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = sample.value
    return out


def wait_idle(base_url: str, timeout_s: float = 60.0, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Wait until the engine holds no request and no KV block; returns the metrics then."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = read_metrics(base_url, headers)
        if (m["titaninfer_num_requests_running"] == 0 and m["titaninfer_num_requests_waiting"] == 0
                and m["titaninfer_kv_blocks_used"] == 0):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"engine not idle after {timeout_s} s: {m}")
        time.sleep(0.1)
