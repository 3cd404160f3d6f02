"""GET /metrics on the real gateway after real requests (the embedded model and a scripted frontier upstream): every
metric of issue 7 is there, with values that match the requests made and, for tokens and dollars, the ledger's rows.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.gateway_server import LOCAL_TEST_MODEL, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from router.rules import default_rules_path

pytestmark = pytest.mark.model

HI = [{"role": "user", "content": "Hi there!"}]
COUNTING = [{"role": "user", "content": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SECRET_SESSION, SECRET_USER = "session-do-not-label-3f9a", "user-do-not-label-77c1"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Traffic:
    gateway: GatewayProcess
    rules_file: Path
    headers: list[httpx.Headers] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.headers) + len(self.errors)


def scrape(gateway: GatewayProcess, accept: str | None = None) -> httpx.Response:
    response = httpx.get(gateway.url + "/metrics", headers={"accept": accept} if accept else {}, timeout=10)
    assert response.status_code == 200
    return response


def samples(gateway: GatewayProcess) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(scrape(gateway).text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def by(s: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` summed by the given labels, zeros left out."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in s.items():
        if sample == name and value:
            named = dict(labels)
            key = tuple(named[k] for k in keys)
            out[key] = out.get(key, 0.0) + value
    return out


def ledger_rows(gateway: GatewayProcess) -> list[dict[str, Any]]:
    with sqlite3.connect(gateway.workdir / "ledger.sqlite3") as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM requests")]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(default=Reply.text("from the frontier", usage=(31, 7, 0))) as up:
        yield up


@pytest.fixture(scope="module")
def traffic(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    workdir = tmp_path_factory.mktemp("metrics")
    # A folder of its own: the store rereads the file on any change in its folder, and the gateway's log and ledger
    # change theirs all the time.
    (workdir / "rules").mkdir()
    rules_file = workdir / "rules" / "rules.yaml"
    rules_file.write_text(default_rules_path().read_text())
    config = {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {
                "name": "gpt-test",
                "model": "gpt-4.1-mini",
                "api_base": upstream.base_url,
                "api_key_env": None,
                "max_retries": 0,
                "timeout_s": 5.0,
            }
        ],
        "routing": {"rules_file": str(rules_file)},
    }
    with GatewayProcess(config, workdir) as gateway:
        run = Traffic(gateway, rules_file)
        client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=60)

        def create(**kwargs: Any) -> None:
            try:
                raw = client.chat.completions.with_raw_response.create(**kwargs)
            except openai.APIStatusError as exc:
                run.errors.append(exc.status_code)
                return
            if kwargs.get("stream"):
                list(raw.parse())  # the request is over (and counted) once its stream is
            else:
                raw.parse()
            run.headers.append(raw.headers)

        private = {"user": SECRET_USER, "extra_headers": {"x-tiergate-session": SECRET_SESSION}}
        create(model="local", messages=HI, max_tokens=4, temperature=0, **private)
        create(model="local", messages=HI, max_tokens=4, temperature=0)
        create(model="local", messages=HI, max_tokens=4, temperature=0, stream=True)
        create(model="frontier", messages=HI, **private)
        create(model="frontier", messages=HI, stream=True, stream_options={"include_usage": True})
        upstream.push(Reply.tool_call("get_weather", {"city": "Oslo"}, usage=(55, 9, 0)))
        # Three tokens cannot hold a whole call: the local answer fails verification and escalates.
        create(
            model="auto",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_tokens=3,
        )
        create(model="no-such-model", messages=HI)
        upstream.push(Reply.status(503))
        create(model="frontier", messages=HI)
        deadline = time.monotonic() + 10
        while len(ledger_rows(gateway)) < run.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        yield run


def test_exposition_formats(traffic: Traffic) -> None:
    plain = scrape(traffic.gateway)
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    open_metrics = scrape(traffic.gateway, accept="application/openmetrics-text; version=1.0.0")
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


def test_every_metric_of_the_issue_is_exported(traffic: Traffic) -> None:
    families = {f.name: f.type for f in text_string_to_metric_families(scrape(traffic.gateway).text)}
    expected = {
        "tiergate_requests": "counter",
        "tiergate_escalations": "counter",
        "tiergate_gateway_overhead_seconds": "histogram",
        "tiergate_request_duration_seconds": "histogram",
        "tiergate_time_to_first_token_seconds": "histogram",
        "tiergate_input_tokens": "counter",
        "tiergate_output_tokens": "counter",
        "tiergate_cost_usd": "counter",
        "tiergate_all_frontier_cost_usd": "counter",
        "tiergate_savings_usd": "gauge",
        "tiergate_local_queue_depth": "gauge",
        "tiergate_local_busy_generations": "gauge",
        "tiergate_compression_saved_tokens": "counter",
        "tiergate_rules_reloads": "counter",
        "tiergate_rules_reload_failures": "counter",
        "tiergate_ledger_queue_depth": "gauge",
        "tiergate_ledger_dropped_rows": "counter",
    }
    assert {name: families.get(name) for name in expected} == expected


def test_request_counts_match_the_requests_made_and_the_ledger(traffic: Traffic) -> None:
    s = samples(traffic.gateway)
    counted = by(s, "tiergate_requests_total", "tier", "model", "rule", "status")
    assert sum(counted.values()) == traffic.requests == 8
    made = Counter((h["x-tiergate-tier"], h["x-tiergate-model"], h["x-tiergate-rule"], "200") for h in traffic.headers)
    assert sorted(traffic.errors) == [404, 502]
    made[("none", "none", "none", "404")] += 1  # the unknown model: no tier, model or rule
    made[("none", "none", "pinned", "502")] += 1  # the failed frontier call: pinned, no answer
    assert counted == dict(made)
    rows = Counter(
        (r["tier"] or "none", r["model"] or "none", r["rule"] or "none", str(r["status"]))
        for r in ledger_rows(traffic.gateway)
    )
    assert counted == dict(rows)
    by_tier = by(s, "tiergate_requests_total", "tier")
    assert by_tier == {("local",): 3, ("frontier",): 3, ("none",): 2}


def test_escalations_by_reason(traffic: Traffic) -> None:
    escalated = [h for h in traffic.headers if h["x-tiergate-escalated"] != "no"]
    assert len(escalated) == 1
    kind, _, reason = escalated[0]["x-tiergate-escalated"].partition(":")
    assert kind == "verification"
    counted = by(samples(traffic.gateway), "tiergate_escalations_total", "kind", "reason", "rule")
    assert counted == {(kind, reason, escalated[0]["x-tiergate-rule"]): 1}


def test_latency_and_time_to_first_token_by_tier(traffic: Traffic) -> None:
    s = samples(traffic.gateway)
    assert by(s, "tiergate_request_duration_seconds_count", "tier") == {("local",): 3, ("frontier",): 3, ("none",): 2}
    assert by(s, "tiergate_time_to_first_token_seconds_count", "tier") == {("local",): 1, ("frontier",): 1}
    rows = ledger_rows(traffic.gateway)
    for tier in ("local", "frontier"):
        latency_s = sum(r["latency_ms"] for r in rows if r["tier"] == tier) / 1000
        assert s[("tiergate_request_duration_seconds_sum", (("tier", tier),))] == pytest.approx(latency_s, rel=1e-6)
    overhead = by(s, "tiergate_gateway_overhead_seconds_count", "tier")
    with_header = sum(1 for h in traffic.headers if "x-tiergate-overhead-ms" in h)
    assert with_header <= sum(overhead.values()) <= traffic.requests


def test_tokens_and_dollars_equal_the_ledgers(traffic: Traffic) -> None:
    s = samples(traffic.gateway)
    tokens_in: Counter[tuple[str, str]] = Counter()
    tokens_out: Counter[tuple[str, str]] = Counter()
    cost: dict[tuple[str, str], Decimal] = {}
    counterfactual: dict[tuple[str, str], Decimal] = {}
    wasted: dict[tuple[str, str], Decimal] = {}

    def add(sums: dict[tuple[str, str], Decimal], key: tuple[str, str], value: Any) -> None:
        sums[key] = sums.get(key, Decimal(0)) + Decimal(str(value))

    local = ("local", "gemma3-270m")
    for r in ledger_rows(traffic.gateway):
        if r["tier"] is not None:
            key = (r["tier"], r["model"])
            tokens_in[key] += r["tokens_in"]
            tokens_out[key] += r["tokens_out"]
            add(cost, key, r["cost_usd"])
            add(counterfactual, key, r["counterfactual_usd"])
        if r["escalated"]:  # the wasted attempt is the (only) local model's; the metrics count it under its tier
            add(cost, local, r["wasted_cost_usd"])
            add(wasted, local, r["wasted_cost_usd"])
    for name, expected in (
        ("tiergate_cost_usd_total", cost),
        ("tiergate_all_frontier_cost_usd_total", counterfactual),
        ("tiergate_wasted_cost_usd_total", wasted),
    ):
        exported = by(s, name, "tier", "model")
        assert set(exported) == {k for k, v in expected.items() if v}, name
        for pair, value in exported.items():
            assert value == pytest.approx(float(expected[(pair[0], pair[1])]), rel=1e-12, abs=1e-15), (name, pair)
    report = httpx.get(traffic.gateway.url + "/v1/reports/cost").json()["total"]
    spend = sum(v for (n, _), v in s.items() if n == "tiergate_cost_usd_total")
    assert spend == pytest.approx(float(report["spend_usd"]), rel=1e-12)
    savings = sum(v for (n, _), v in s.items() if n == "tiergate_savings_usd")
    assert savings == pytest.approx(float(report["savings_usd"]), rel=1e-9, abs=1e-15)

    # Tokens: the answers' equal the ledger's; the local tier also read and wrote the escalated attempt's, which the
    # ledger prices but does not count (3 completion tokens: max_tokens=3).
    exported_in = by(s, "tiergate_input_tokens_total", "tier", "model")
    exported_out = by(s, "tiergate_output_tokens_total", "tier", "model")
    frontier = ("frontier", "gpt-test")
    assert exported_in[frontier] == tokens_in[frontier] == 31 + 31 + 55  # the upstream's script
    assert exported_out[frontier] == tokens_out[frontier] == 7 + 7 + 9
    assert exported_out[local] == tokens_out[local] + 3
    assert exported_in[local] > tokens_in[local]


def test_compression_saved_tokens_match_the_headers(traffic: Traffic) -> None:
    saved = 0
    for h in traffic.headers:
        if "x-tiergate-compression" in h:
            before, after = (int(n) for n in h["x-tiergate-compression"].split("->"))
            saved += before - after
    exported = by(samples(traffic.gateway), "tiergate_compression_saved_tokens_total", "tier")
    assert sum(exported.values()) == saved


def test_no_user_key_or_session_in_labels(traffic: Traffic) -> None:
    text = scrape(traffic.gateway).text
    assert SECRET_SESSION not in text and SECRET_USER not in text
    for h in traffic.headers:
        assert h["x-request-id"] not in text
    names = {label for family in text_string_to_metric_families(text) for s in family.samples for label in s.labels}
    assert not names & {"user", "session", "session_id", "key", "api_key", "request_id"}


def test_ledger_gauges_match_the_ledger(traffic: Traffic) -> None:
    s = samples(traffic.gateway)
    assert s[("tiergate_ledger_queue_depth", ())] == 0
    assert s[("tiergate_ledger_dropped_rows_total", ())] == 0
    assert s[("tiergate_ledger_written_rows_total", ())] == len(ledger_rows(traffic.gateway)) == traffic.requests


def test_local_queue_depth_and_busy_generations_while_generating(traffic: Traffic) -> None:
    gateway = traffic.gateway
    depth_key = ("tiergate_local_queue_depth", (("model", "gemma3-270m"),))
    busy_key = ("tiergate_local_busy_generations", (("model", "gemma3-270m"),))
    at_rest = samples(gateway)
    assert (at_rest[depth_key], at_rest[busy_key]) == (0, 0)
    client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=60)
    # A base model continues a count without stopping: the 16 tokens take a while after the first arrives.
    stream = client.chat.completions.create(model="local", messages=COUNTING, max_tokens=16, temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)  # the generation runs on the model's worker thread now
    during = samples(gateway)
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"  # it was still generating when scraped
    assert (during[depth_key], during[busy_key]) == (1, 1)
    after = samples(gateway)
    assert (after[depth_key], after[busy_key]) == (0, 0)


def test_rules_reloads_and_failures(traffic: Traffic) -> None:
    gateway, rules_file = traffic.gateway, traffic.rules_file
    before = samples(gateway)
    assert before[("tiergate_rules_reloads_total", ())] == 0
    assert before[("tiergate_rules_reload_failures_total", ())] == 0
    valid = rules_file.read_text()

    def wait_for(name: str, value: float) -> Samples:
        deadline = time.monotonic() + 15
        while True:
            s = samples(gateway)
            if s.get((name, ())) == value or time.monotonic() > deadline:
                return s
            time.sleep(0.1)

    def replace(text: str) -> None:
        # Written beside the folder and renamed into it: the watcher sees one whole new file, never half of one.
        staged = rules_file.parent.parent / "rules.staged"
        staged.write_text(text)
        staged.replace(rules_file)

    replace("version: 1\nthreshold: [not a number\n")
    s = wait_for("tiergate_rules_reload_failures_total", 1)
    assert s[("tiergate_rules_reload_failures_total", ())] == 1
    assert s[("tiergate_rules_last_reload_failed", ())] == 1
    replace(valid.replace("threshold: 0.5", "threshold: 0.6"))
    s = wait_for("tiergate_rules_reloads_total", 1)
    assert s[("tiergate_rules_reloads_total", ())] == 1
    assert s[("tiergate_rules_last_reload_failed", ())] == 0
    version = httpx.get(gateway.url + "/admin/rules").json()["version"]
    assert s[("tiergate_rules_info", (("version", version),))] == 1
    assert sum(1 for name, _ in s if name == "tiergate_rules_info") == 1
