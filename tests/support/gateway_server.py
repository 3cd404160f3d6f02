"""Start the real gateway (`python -m gateway serve`) on a free loopback port, as a user would, and stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]

LOCAL_TEST_MODEL = {
    "name": "gemma3-270m",
    "context_tokens": 4096,
    "max_queue": 1,
    "default_max_tokens": 64,
    "threads": 1,
}
"""The embedded model as the tests configure it: a small context, a queue of one behind the running generation, and
one thread (predictable on a busy 2-core machine, where two spinning llama.cpp threads run slower than one)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class GatewayProcess:
    """A gateway subprocess with its own config file; `base_url` ends in /v1 for the openai client."""

    def __init__(self, config: Mapping[str, Any], workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config_path = workdir / "tiergate.yaml"
        config = dict(config)
        # Each gateway gets its own ledger in its own folder, written often so tests see rows soon.
        ledger = {
            "database_url": f"sqlite:///{workdir / 'ledger.sqlite3'}",
            "spool_dir": str(workdir / "spool"),
            "batch_interval_ms": 50,
            **config.get("ledger", {}),
        }
        config["ledger"] = ledger
        # A config file turns API keys on; tests that are not about keys run open, as the quick start does.
        config.setdefault("auth", {"enabled": False})
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "gateway.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, wait_ready: bool = True, timeout_s: float = 180.0) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path), "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + ("/readyz" if wait_ready else "/healthz"), timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
