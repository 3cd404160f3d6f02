"""The built-in dashboard in a real browser: headless Chromium (Debian's `chromium`) driven over its DevTools
protocol loads /dashboard from the real gateway after real requests, with no console errors and nothing fetched from
elsewhere; every chart draws data; it refreshes itself and follows the range selector; a screenshot is saved to
test-artifacts/dashboard.png.

Chromium is installed by the test setup (`apt-get install chromium`) where it is missing and this process may; the
test is skipped, saying why, only where it cannot be installed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from support.gateway_server import LOCAL_TEST_MODEL, REPO, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

pytestmark = pytest.mark.model

ARTIFACTS = REPO / "test-artifacts"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHARTS = ("per-success", "spend", "volume", "escalation", "rules", "latency", "ttft")
HI = [{"role": "user", "content": "Hi there!"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _find_browser() -> str | None:
    for name in (os.environ.get("CHROMIUM"), *BROWSER_NAMES):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def _install_chromium() -> str:
    """The browser's path, installing Debian's package first where it is missing; skips where it cannot."""
    found = _find_browser()
    if found:
        return found
    if not shutil.which("apt-get"):
        pytest.skip("no Chromium, and no apt-get to install it with: install chromium (or set CHROMIUM=/path)")
    if os.geteuid() != 0:
        pytest.skip(
            "no Chromium, and installing it needs root: run `sudo apt-get install -y chromium` (or `make test`)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            pytest.skip(f"could not install Chromium ({' '.join(command)}): {done.stderr.strip()[-500:]}")
    found = _find_browser()
    if not found:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return found


@dataclass
class Browser:
    process: subprocess.Popen[bytes]
    page_ws: str


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    executable = _install_chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
            "--window-size=1400,2400",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not open its DevTools port (exit code {process.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json() if t["type"] == "page"]
        yield Browser(process, pages[0]["webSocketDebuggerUrl"])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class DevTools:
    """The few DevTools protocol calls the test needs; events that arrive meanwhile are kept in `events`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=60)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.1)

    def problems(self) -> list[str]:
        out = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{params['type']}: {json.dumps(params.get('args'))[:500]}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                out.append(
                    f"log {params['entry']['level']}: {params['entry'].get('text')} {params['entry'].get('url')}"
                )
        return out

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier", usage=(40, 12, 0))) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
    }
    with GatewayProcess(config, tmp_path_factory.mktemp("dashboard")) as gw:
        yield gw


def _traffic(gateway: GatewayProcess, upstream: ScriptedUpstream) -> int:
    """Requests through both tiers (streamed too, for time to first token), an escalation, a failure, and outcomes
    for some of them; returns how many requests were made."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=60)
    session = {"x-tiergate-session": "dashboard-run-1"}
    ids = []
    for model, stream, headers in (
        ("local", False, session),
        ("local", True, {}),
        ("frontier", False, session),
        ("frontier", True, {}),
        ("frontier", False, {}),
    ):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=HI, max_tokens=4, stream=stream, extra_headers=headers
        )
        if stream:
            list(raw.parse())
        ids.append(raw.headers["x-request-id"])
    upstream.push(Reply.tool_call("get_weather", {"city": "Oslo"}))
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=3,
    )
    assert raw.headers["x-tiergate-escalated"].startswith("verification:")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HI)
    feedback = [
        {"session_id": "dashboard-run-1", "metric": "success", "value": True},
        {"request_id": ids[1], "metric": "success", "value": True},
        {"request_id": ids[3], "metric": "success", "value": True},
        {"request_id": ids[4], "metric": "success", "value": False},
    ]
    for item in feedback:
        assert httpx.post(gateway.url + "/v1/feedback", json=item, timeout=10).status_code == 200
    return 7


async def _drive(browser: Browser, gateway: GatewayProcess, upstream: ScriptedUpstream, made: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.ws_connect(browser.page_ws, max_msg_size=0) as ws:
        tools = DevTools(ws)
        for domain in ("Runtime", "Log", "Network", "Page"):
            await tools.call(f"{domain}.enable")
        await tools.call(
            "Emulation.setDeviceMetricsOverride", width=1400, height=2400, deviceScaleFactor=1, mobile=False
        )
        await tools.call("Page.navigate", url=f"{gateway.url}/dashboard?range=1h&refresh=1")
        await tools.wait_for("window.tiergateDashboard && window.tiergateDashboard.renders >= 1")
        first = await tools.evaluate(_SUMMARY)

        # It refreshes itself: a request made now shows up without touching the page.
        openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="frontier", messages=HI
        )
        refreshed = await tools.wait_for(
            f"document.getElementById('tile-requests').textContent === '{made + 1}'", timeout_s=20
        )

        # The range selector refetches and is kept in the URL.
        await tools.evaluate(
            "(() => { const s = document.getElementById('range'); s.value = '6h';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        await tools.wait_for("window.tiergateDashboard.data && window.tiergateDashboard.data.range === '6h'")
        after_range = await tools.evaluate(_SUMMARY)

        shot = await tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "dashboard.png").write_bytes(base64.b64decode(shot["data"]))
        await asyncio.sleep(0.3)  # let late console events arrive
        await tools.evaluate("1")
        return {
            "first": first,
            "refreshed": refreshed,
            "after_range": after_range,
            "problems": tools.problems(),
            "urls": tools.requested_urls(),
        }


_SUMMARY = """(() => {
  const charts = {};
  for (const svg of document.querySelectorAll('svg[data-chart]')) {
    const shapes = svg.querySelectorAll('path, circle, rect').length;
    charts[svg.dataset.chart] = {points: Number(svg.dataset.points), shapes};
  }
  const text = (id) => document.getElementById(id).textContent;
  return {
    charts,
    requests: text('tile-requests'),
    perSuccess: text('tile-per-success'),
    spend: text('tile-spend'),
    savings: text('tile-savings'),
    escalation: text('tile-escalation'),
    rules: document.querySelectorAll('#rules-table tbody tr').length,
    rulesSummary: text('rules-summary'),
    models: [...document.querySelectorAll('#models-table tbody tr')].map((r) => r.cells[0].textContent),
    problemShown: !document.getElementById('problem').hidden,
    errors: window.tiergateDashboard.errors,
    search: location.search,
  };
})()"""


def test_the_dashboard_renders_real_data_in_chromium(
    browser: Browser, gateway: GatewayProcess, upstream: ScriptedUpstream
) -> None:
    made = _traffic(gateway, upstream)
    deadline = time.monotonic() + 10
    while httpx.get(gateway.url + "/v1/reports/cost", timeout=10).json()["total"]["requests"] < made:
        assert time.monotonic() < deadline, "the ledger did not record the requests"
        time.sleep(0.05)
    result = asyncio.run(_drive(browser, gateway, upstream, made))

    assert result["problems"] == []
    origin = gateway.url + "/"
    assert [u for u in result["urls"] if not u.startswith(origin) and not u.startswith("data:")] == []
    first = result["first"]
    assert first["problemShown"] is False and first["errors"] == []
    for chart in CHARTS:
        assert first["charts"][chart]["points"] > 0, (chart, first["charts"][chart])
    assert first["requests"] == str(made)
    assert first["perSuccess"].startswith("$") and first["spend"].startswith("$")
    assert first["escalation"].endswith("%")
    admin = httpx.get(gateway.url + "/admin/rules", timeout=10).json()
    assert first["rules"] == admin["rules"] and admin["version"] in first["rulesSummary"]
    assert first["models"] == ["gemma3-270m", "gpt-test"]
    assert result["refreshed"] is True
    assert "range=6h" in result["after_range"]["search"]
    assert result["after_range"]["requests"] == str(made + 1)
    png = (ARTIFACTS / "dashboard.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_the_data_endpoint_refuses_a_bad_range(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/dashboard/data?range=2h", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "range"
    for name in ("index.html", "handlers.py", "..%2Fhandlers.py"):
        assert httpx.get(f"{gateway.url}/dashboard/assets/{name}", timeout=10).status_code == 404, name
    page = httpx.get(gateway.url + "/dashboard", timeout=10)
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_the_dashboard_ships_its_own_assets() -> None:
    package = REPO / "gateway" / "dashboard"
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        body = (package / name).read_text()
        assert "http://" not in body.replace("http://www.w3.org/2000/svg", "") and "https://" not in body, name
    assert not Path(package / "node_modules").exists()


async def _drive_session_view(browser: Browser, gateway: GatewayProcess, session_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.ws_connect(browser.page_ws, max_msg_size=0) as ws:
        tools = DevTools(ws)
        for domain in ("Runtime", "Log", "Page"):
            await tools.call(f"{domain}.enable")
        await tools.call("Page.navigate", url=f"{gateway.url}/dashboard?range=1h&refresh=0")
        await tools.wait_for("window.tiergateSessions && window.tiergateSessions.loads >= 1")
        listed = await tools.evaluate(
            f"""(() => {{
              const row = document.querySelector('#sessions-table tr[data-session="{session_id}"]');
              if (!row) return null;
              const cells = [...row.cells].map((c) => c.textContent);
              row.click();  // opens the session's steps, as a user's click does
              return cells;
            }})()"""
        )
        await tools.wait_for("window.tiergateSessions.detailLoads >= 1")
        detail = await tools.evaluate(
            """(() => ({
              title: document.getElementById('session-title').textContent,
              summary: document.getElementById('session-summary').textContent,
              steps: [...document.querySelectorAll('#session-steps tbody tr')].map(
                (r) => [...r.cells].map((c) => c.textContent)),
              search: location.search,
              errors: window.tiergateSessions.errors,
            }))()"""
        )
        await asyncio.sleep(0.3)  # let late console events arrive
        await tools.evaluate("1")
        return {"listed": listed, "detail": detail, "problems": tools.problems()}


def test_the_session_view_shows_a_sessions_steps_in_order(browser: Browser, gateway: GatewayProcess) -> None:
    session_id = "session-view-run"
    headers = {"x-tiergate-session": session_id, "x-tiergate-task": "view-task"}
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=60)
    tiers = ("frontier", "local", "frontier")
    for model in tiers:
        client.chat.completions.create(model=model, messages=HI, max_tokens=2, extra_headers=headers)
    feedback = {"session_id": session_id, "metric": "success", "value": False}
    assert httpx.post(gateway.url + "/v1/feedback", json=feedback, timeout=10).status_code == 200
    deadline = time.monotonic() + 10
    while len(httpx.get(f"{gateway.url}/dashboard/sessions/{session_id}", timeout=10).json().get("steps", [])) < 3:
        assert time.monotonic() < deadline, "the ledger did not record the session's steps"
        time.sleep(0.05)

    result = asyncio.run(_drive_session_view(browser, gateway, session_id))

    assert result["problems"] == [] and result["detail"]["errors"] == []
    session_id_cell, task, steps, spend, outcome, _ = result["listed"]
    assert (session_id_cell, task, steps, outcome) == (session_id, "view-task", "3", "failure")
    assert spend.startswith("$")
    detail = result["detail"]
    assert detail["title"] == f"Session {session_id} · task view-task"
    assert "3 steps" in detail["summary"] and "outcome: failure" in detail["summary"]
    # step, tier, model, rule, escalated, cost, latency, status
    assert [row[:5] for row in detail["steps"]] == [
        ["1", "frontier", "gpt-test", "pinned", "no"],
        ["2", "local", "gemma3-270m", "pinned", "no"],
        ["3", "frontier", "gpt-test", "pinned", "no"],
    ]
    assert all(row[5].startswith("$") and row[7] == "200" for row in detail["steps"])
    assert f"session={session_id}" in detail["search"]
    assert httpx.get(gateway.url + "/dashboard/sessions/no-such-session", timeout=10).status_code == 404
    assert httpx.get(gateway.url + "/dashboard/sessions?limit=0", timeout=10).status_code == 400
