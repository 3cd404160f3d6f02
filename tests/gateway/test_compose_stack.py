"""docker-compose.yml and what it mounts, checked without a Docker engine: the file parses, every service has an
image or a build, every file it mounts exists, Prometheus scrapes the gateway where compose runs it, Grafana's
provisioning fits together, the gateway's config is valid, and every metric the Grafana board queries is one the
gateway exports (against a live /metrics)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.gateway_server import LOCAL_TEST_MODEL, REPO, GatewayProcess

from gateway.settings import load_settings

DEPLOY = REPO / "deploy"
BOARD = DEPLOY / "grafana" / "dashboards" / "tiergate.json"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = _yaml(REPO / "docker-compose.yml")
    return document


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, in the short syntax `SOURCE:TARGET[:MODE]`; SOURCE may be `${VAR:-default}`."""
    out = []
    for volume in service.get("volumes", []):
        split = volume.index("}") + 1 if volume.startswith("${") else volume.index(":")
        source, rest = volume[:split], volume[split + 1 :]
        out.append((source, rest.split(":")[0]))
    return out


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"gateway", "postgres", "prometheus", "grafana", "llama-server"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), name
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
    assert services["llama-server"]["profiles"] == ["llama-server"]  # optional: only with --profile llama-server
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_mounted_file_exists_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _ in _mounts(service):
            if source.startswith("${"):
                continue  # the operator's own folder (models mounted from the host)
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), (name, source)
            else:
                assert source in declared, (name, source)


def test_the_dockerfile_copies_every_package_it_installs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, flags=re.MULTILINE))
    pyproject = (REPO / "pyproject.toml").read_text()
    include = re.search(r"include = \[(.*?)\]", pyproject)
    assert include is not None
    packages = {p.strip().strip('"').rstrip("*") for p in include.group(1).split(",")}
    assert packages <= copied
    for path in copied:
        assert (REPO / path).exists(), path
    assert "EXPOSE 8080" in dockerfile and 'ENTRYPOINT ["tiergate"]' in dockerfile


def test_prometheus_scrapes_the_gateway_where_compose_runs_it(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_mount = dict((target, source) for source, target in _mounts(prometheus))["/etc/prometheus/prometheus.yml"]
    config = _yaml(REPO / config_mount)
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "tiergate")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    gateway_config = load_settings(REPO / "deploy" / "tiergate.yaml")
    assert targets == [f"gateway:{gateway_config.port}"]
    assert gateway_config.host == "0.0.0.0"  # reachable from the Prometheus container


def test_the_gateway_config_in_compose_is_valid(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    mounts = {target: source for source, target in _mounts(gateway)}
    config_path = gateway["command"][gateway["command"].index("--config") + 1]
    settings = load_settings(REPO / mounts[config_path])
    assert settings.routing.rules_file is not None
    rules_dir = str(settings.routing.rules_file.parent)
    assert (REPO / mounts[rules_dir] / settings.routing.rules_file.name).is_file()
    url = gateway["environment"]["TIERGATE_LEDGER__DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url


def test_grafana_provisioning_fits_together(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {target: source for source, target in _mounts(grafana)}
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    datasources = [d for f in (provisioning / "datasources").glob("*.yaml") for d in _yaml(f)["datasources"]]
    assert [d["url"] for d in datasources] == ["http://prometheus:9090"]
    uid = datasources[0]["uid"]
    providers = [p for f in (provisioning / "dashboards").glob("*.yaml") for p in _yaml(f)["providers"]]
    board_dir = providers[0]["options"]["path"]
    assert (REPO / mounts[board_dir] / BOARD.name).is_file()
    board = json.loads(BOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]


def _board_queries() -> list[str]:
    board = json.loads(BOARD.read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def metric_names(promql: str) -> set[str]:
    """The series names a PromQL expression reads (not functions, label names, keywords or numbers)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)  # label matchers and ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"label_values\(([^,)]+),[^)]*\)", r"\1", text)  # Grafana's variable query
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = 'histogram_quantile(0.95, sum by (tier, le) (rate(x_seconds_bucket{a=~"$b"}[$__rate_interval]))) / y'
    assert metric_names(expr) == {"x_seconds_bucket", "y"}
    assert metric_names("label_values(tiergate_model_ready, instance)") == {"tiergate_model_ready"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every series name a fresh gateway's /metrics declares (a family with no samples yet still counts)."""
    with GatewayProcess({"local_models": [LOCAL_TEST_MODEL]}, tmp_path_factory.mktemp("compose")) as gateway:
        text = httpx.get(gateway.url + "/metrics", timeout=10).text
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    yield names


@pytest.mark.model
def test_every_metric_the_grafana_board_queries_is_exported(exported: set[str]) -> None:
    queried = set().union(*(metric_names(q) for q in _board_queries()))
    assert len(queried) >= 20
    assert sorted(queried - exported) == []
    # and the board shows each metric of the issue
    for family in (
        "tiergate_requests_total",
        "tiergate_escalations_total",
        "tiergate_gateway_overhead_seconds_bucket",
        "tiergate_request_duration_seconds_bucket",
        "tiergate_time_to_first_token_seconds_bucket",
        "tiergate_input_tokens_total",
        "tiergate_output_tokens_total",
        "tiergate_cost_usd_total",
        "tiergate_all_frontier_cost_usd_total",
        "tiergate_local_queue_depth",
        "tiergate_local_busy_generations",
        "tiergate_compression_saved_tokens_total",
        "tiergate_rules_reloads_total",
        "tiergate_rules_reload_failures_total",
        "tiergate_ledger_queue_depth",
        "tiergate_ledger_dropped_rows_total",
    ):
        assert family in queried, family
