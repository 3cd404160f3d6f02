"""What the overhead benchmark measures: the mock upstream, the floor, Tiergate and LiteLLM's proxy as processes on
loopback, and what each costs in memory and CPU (read from /proc for the whole process tree).

Each server is a subprocess in its own process group, started with a config written into a temporary folder, ready
when its health URL answers 200, and stopped with SIGTERM to that group (SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
UPSTREAM_SCRIPT = REPO / "tests" / "support" / "scripted_upstream.py"

LITELLM_VERSION = "1.106.2"
"""Pinned: litellm 1.82.7 and 1.82.8 were compromised on PyPI, and newer releases need a certifi the mirror lacks."""
LITELLM_VENV = Path("~/.cache/tiergate/bench-litellm-venv").expanduser()
LITELLM_WORKERS = 2
"""As DESIGN.md measured it: on 2 cores, 2 uvicorn workers are LiteLLM's best configuration."""

UPSTREAM_MODEL = "bench-upstream"
"""The model id every target sends upstream (the mock echoes it)."""

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- processes ----------------------------------------------------------------------------------------------------


class ServerProcess:
    """One server subprocess (and its workers), its log in `log_path`."""

    def __init__(self, name: str, command: list[str], ready_url: str, log_path: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.command = command
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = dict(env)
        self.cwd = REPO
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.ready_url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 15.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # Workers left behind by a parent that exited first are in the same group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None


@dataclass
class Target:
    """One thing the load is aimed at."""

    name: str
    url: str
    """Its chat completions URL."""
    model: str
    """The `model` field the requests carry."""
    server: ServerProcess | None
    """None for the upstream itself (its cost is the baseline, not measured here)."""
    note: str = ""
    api_key: str = "sk-bench"
    """Sent as the bearer token (LiteLLM's proxy refuses to start without a master key)."""


def start_upstream(workdir: Path, latency_ms: float, chunks: int = 1, chunk_delay_ms: float = 0.0) -> ServerProcess:
    """The mock: every answer after `latency_ms`; a stream carries `chunks` content chunks `chunk_delay_ms` apart."""
    port = free_port()
    command = [sys.executable, str(UPSTREAM_SCRIPT), "--port", str(port), "--latency-ms", f"{latency_ms:g}"]
    command += ["--text", "tok " * chunks, "--chunk-chars", "4", "--chunk-delay-ms", f"{chunk_delay_ms:g}"]
    server = ServerProcess(
        "upstream", command, f"http://127.0.0.1:{port}/v1/models", workdir / "upstream.log", os.environ
    )
    return server.start()


def upstream_base(server: ServerProcess) -> str:
    return server.ready_url.removesuffix("/models")


def direct_target(upstream: ServerProcess) -> Target:
    return Target("direct", upstream_base(upstream) + "/chat/completions", UPSTREAM_MODEL, None, "the mock itself")


def floor_target(workdir: Path, upstream: ServerProcess) -> Target:
    port = free_port()
    command = [
        sys.executable,
        str(BENCH / "overhead_floor.py"),
        "--upstream",
        upstream_base(upstream),
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess("floor", command, url + "/healthz", workdir / "floor.log", os.environ)
    return Target("floor", url + "/v1/chat/completions", UPSTREAM_MODEL, server.start(), "FastAPI + aiohttp, 1 process")


def tiergate_config(
    workdir: Path, upstream: ServerProcess, port: int, *, frontier_only: bool = False, auth: bool = False
) -> Path:
    """A rules file that sends every request to the frontier tier, and a config whose frontier tier is the mock.

    The embedded local model stays configured as usual (it loads, and answers nothing here) unless `frontier_only`
    (`local_models: []`); the ledger writes to a SQLite file, as it would in a default setup. API keys are checked
    only with `auth`. The rules file has a folder of its own: the rules watcher reacts to any change in the file's
    folder, and the ledger's writes would otherwise wake it on every batch.
    """
    rules = {
        "version": 1,
        "threshold": 0.5,
        "rules": [
            {
                "name": "bench-everything-frontier",
                "description": "The overhead benchmark: every request goes to the mock upstream.",
                "when": {"score": {">=": 0}},
                "action": "frontier",
            }
        ],
    }
    (workdir / "rules").mkdir(exist_ok=True)
    (workdir / "ledger").mkdir(exist_ok=True)
    rules_path = workdir / "rules" / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "frontier_models": [
            {
                "name": "bench-frontier",
                "provider": "openai_compatible",
                "model": UPSTREAM_MODEL,
                "api_base": upstream_base(upstream),
                "api_key_env": None,
            }
        ],
        "routing": {"rules_file": str(rules_path)},
        # Open, as the figures in BENCHMARKS.md were taken; a config file would otherwise turn API keys on.
        "auth": {"enabled": auth},
        "ledger": {
            "database_url": f"sqlite:///{workdir / 'ledger' / 'ledger.sqlite3'}",
            "spool_dir": str(workdir / "ledger" / "spool"),
        },
    }
    if frontier_only:
        config["local_models"] = []
    config_path = workdir / "tiergate.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path


def create_key(config: Path) -> str:
    """A client key in the config's ledger database, made as an operator makes one (`tiergate keys create`)."""
    command = [sys.executable, "-m", "gateway", "keys", "create", "--name", "bench", "--config", str(config)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, check=True, timeout=120)
    return done.stdout.decode().strip().splitlines()[-1]  # the secret is the last line it prints


@dataclass(frozen=True)
class Variant:
    """Tiergate as another checkout runs it (a branch with a proposed change), or with other settings."""

    name: str
    checkout: Path
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """`NAME=PATH[,KEY=VALUE...]`, e.g. `quiet=.,TIERGATE_LOG_LEVEL=warning`."""
        name, _, rest = spec.partition("=")
        path, *pairs = rest.split(",")
        if not name or not path or any("=" not in p for p in pairs):
            raise ValueError(f"a variant is NAME=PATH[,KEY=VALUE...], not {spec!r}")
        checkout = (REPO / path).resolve() if not Path(path).is_absolute() else Path(path)
        if not (checkout / "gateway" / "__main__.py").is_file():
            raise ValueError(f"variant {name}: {checkout} is not a Tiergate checkout")
        env = tuple((k, v) for k, _, v in (p.partition("=") for p in pairs))
        return cls(name, checkout, env)


def tiergate_target(
    workdir: Path,
    upstream: ServerProcess,
    variant: Variant | None = None,
    *,
    frontier_only: bool = False,
    auth: bool = False,
) -> Target:
    """Tiergate from this checkout, or from a variant's (run with this checkout's virtual environment).

    `auth` names the target `tiergate:auth` and has it check a key made with `tiergate keys create`."""
    name = "tiergate" if variant is None else f"tiergate:{variant.name}"
    name = f"{name}:auth" if auth else name
    folder = workdir / name.replace(":", "-")
    folder.mkdir()
    port = free_port()
    config = tiergate_config(folder, upstream, port, frontier_only=frontier_only, auth=auth)
    api_key = create_key(config) if auth else "sk-bench"
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **dict(variant.env if variant else ())}
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(name, command, url + "/readyz", workdir / f"{folder.name}.log", env)
    if variant is not None:
        server.cwd = variant.checkout  # `python -m gateway` imports the package from the working directory first
    local = "no local model (`local_models: []`)" if frontier_only else "embedded local model loaded"
    note = f"model auto; one rule sends everything to the frontier tier; {local}; ledger on SQLite"
    if variant is not None:
        settings = "".join(f", {k}={v}" for k, v in variant.env)
        note = f"as `tiergate`, from {variant.checkout}{settings}"
    if auth:
        note += "; API keys checked (one key from `tiergate keys create`)"
    return Target(name, url + "/v1/chat/completions", "auto", server.start(), note, api_key=api_key)


def ensure_litellm_venv(venv: Path = LITELLM_VENV) -> Path:
    """LiteLLM's proxy in its own virtual environment (never the project's), created on first use; its CLI path."""
    cli = venv / "bin" / "litellm"
    python = venv / "bin" / "python"
    if cli.exists() and _installed_version(python) == LITELLM_VERSION:
        return cli
    base = shutil.which("python3.11") or str(getattr(sys, "_base_executable", sys.executable))
    print(f"creating {venv} with litellm[proxy]=={LITELLM_VERSION} (a few minutes, once)", file=sys.stderr)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
        check=True,
        timeout=1800,
    )
    if _installed_version(python) != LITELLM_VERSION:
        raise RuntimeError(f"{venv}: litellm {LITELLM_VERSION} did not install")
    return cli


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def litellm_target(workdir: Path, upstream: ServerProcess, workers: int = LITELLM_WORKERS) -> Target:
    cli = ensure_litellm_venv()
    master_key = "sk-" + secrets.token_hex(32)
    config = {
        "model_list": [
            {
                "model_name": "bench",
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": upstream_base(upstream),
                    "api_key": "sk-bench",
                },
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": master_key},
    }
    config_path = workdir / "litellm.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [
        str(cli),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
        # uvicorn restarts a worker that misses its 5 s health check; importing litellm takes longer than that
        # on a busy 2-core machine, so the workers would never come up.
        "--timeout_worker_healthcheck",
        "600",
    ]
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "TIKTOKEN_CACHE_DIR": str(_litellm_tokenizers(cli)),
    }
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess("litellm", command, url + "/health/liveliness", workdir / "litellm.log", env)
    note = f"litellm[proxy]=={LITELLM_VERSION}, {workers} uvicorn workers, a master key, no database"
    return Target("litellm", url + "/v1/chat/completions", "bench", server.start(), note, master_key)


def _litellm_tokenizers(cli: Path) -> Path:
    """The tiktoken encodings in litellm's wheel, so nothing is fetched from the network."""
    lib = cli.parent.parent / "lib"
    found = sorted(lib.glob("python3*/site-packages/litellm/litellm_core_utils/tokenizers"))
    return found[0] if found else lib


def prime(target: Target, body: bytes, timeout_s: float = 300.0) -> None:
    """Send requests until the target answers steadily (LiteLLM's workers each spend seconds on their first
    request), each on a new connection so that every worker of a multi-process server gets some: rounds of 8, four
    at a time, until two rounds in a row answer every request with 200 within a second."""
    request = urllib.request.Request(
        target.url,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {target.api_key}"},
        method="POST",
    )

    def one() -> bool:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return response.status == 200 and time.monotonic() - started < 1.0
        except (OSError, urllib.error.URLError):
            return False

    deadline = time.monotonic() + timeout_s
    good_rounds = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        while good_rounds < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.name} did not answer steadily within {timeout_s:g} s")
            good_rounds = good_rounds + 1 if all(pool.map(lambda _: one(), range(8))) else 0


# --- what a process tree costs ------------------------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _status_kb(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in fields:
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def tree_memory_mb(root: int) -> tuple[float, float]:
    """Resident memory of the tree (MB), and the anonymous part of it: file-backed pages (the GGUF model, mapped
    from disk, and shared libraries) are in the first figure only."""
    rss = anon = 0
    for pid in tree_pids(root):
        values = _status_kb(pid, ("VmRSS", "RssAnon"))
        rss += values.get("VmRSS", 0)
        anon += values.get("RssAnon", 0)
    return rss / 1024, anon / 1024


def tree_cpu_s(root: int) -> float:
    """User plus system CPU seconds used so far by the live processes of the tree."""
    total = 0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLOCK_TICKS


class PeakMemory:
    """Samples a process tree's resident memory every `interval_s` in a thread, keeping the peak."""

    def __init__(self, root: int, interval_s: float = 0.2) -> None:
        self.root = root
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.peak_anon_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, anon = tree_memory_mb(self.root)
            self.peak_mb = max(self.peak_mb, rss)
            self.peak_anon_mb = max(self.peak_anon_mb, anon)
            self._stop.wait(self.interval_s)

    @contextlib.contextmanager
    def watching(self) -> Iterator[PeakMemory]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
