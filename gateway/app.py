"""`create_app(settings)`: the one place where the parts are built and wired together."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.auth.authenticator import Authenticator
from gateway.auth.limits import Limiter, build_counters
from gateway.auth.store import KeyStore
from gateway.errors import install_error_handlers
from gateway.ledger.pricing import Pricing
from gateway.ledger.writer import Ledger
from gateway.metrics import GatewayMetrics, chain_finishers, metrics_finisher, register_state_collectors
from gateway.openapi import install_openapi
from gateway.recording import ledger_finisher, stores_prompt
from gateway.routes import install_routes
from gateway.settings import Settings, is_loopback_host
from gateway.state import Services
from prompt_compression.compressor import Compressor
from prompt_compression.tokens import FrontierTokenCounter, TokenCounter
from router.backend import Backend
from router.catalog import ModelCatalog
from router.frontier import build_frontier_backend
from router.rule_store import RuleStore
from router.rules import default_rules_path
from router.service import ChatService
from router.sessions import InMemorySessionStore, RedisSessionStore, SessionStore
from router.verification import VerificationChain

log = logging.getLogger("tiergate.app")


def build_backends(settings: Settings) -> list[Backend]:
    backends: list[Backend] = []
    if settings.local_models:
        # Imported only when used: llama_cpp, numpy and the chat templates are ~50 MB a frontier-only gateway
        # (`local_models: []`) would otherwise carry for nothing.
        from local_models.backend import LocalBackend

        backends += [LocalBackend(m, settings.cache_dir) for m in settings.local_models]
    backends += [build_frontier_backend(m) for m in settings.frontier_models]
    return backends


def build_compressors(settings: Settings, catalog: ModelCatalog) -> dict[str, Compressor]:
    """One compressor per model: the local ones count with the model's own tokenizer and chat template."""
    compressors: dict[str, Compressor] = {}
    frontier_counter: FrontierTokenCounter | None = None  # only when used: o200k_base costs 74 MB and 200k objects
    for backend in catalog.backends:
        local_counter = _local_counter(backend) if backend.tier == "local" else None
        if local_counter is not None and settings.compression.local.enabled:
            compressors[backend.name] = Compressor(settings.compression.local, local_counter)
        elif backend.tier == "frontier" and settings.compression.frontier.enabled:
            frontier_counter = frontier_counter or FrontierTokenCounter()
            compressors[backend.name] = Compressor(settings.compression.frontier, frontier_counter)
    return compressors


def _local_counter(backend: Backend) -> TokenCounter | None:
    """A local model's own prompt counter (its chat template, then its tokenizer)."""
    from local_models.backend import LocalBackend  # loaded already: build_backends made this local backend

    return backend.count_prompt_tokens if isinstance(backend, LocalBackend) else None


def build_session_store(settings: Settings) -> SessionStore:
    """Shared in Redis when `routing.session_store_url` is set (several replicas), else in this process's memory."""
    routing = settings.routing
    if routing.session_store_url:
        return RedisSessionStore(
            routing.session_store_url, ttl_s=routing.session_ttl_s, timeout_s=routing.session_store_timeout_s
        )
    return InMemorySessionStore(max_sessions=routing.max_sessions, ttl_s=routing.session_ttl_s)


def create_app(settings: Settings) -> FastAPI:
    """Build the app. A bad rules file raises `router.rules.RulesError` here, before anything serves."""
    catalog = ModelCatalog(build_backends(settings))
    routing = settings.routing
    rules = RuleStore(routing.rules_file or default_rules_path())
    sessions = build_session_store(settings)
    aliases = {m.name: m.model for m in settings.frontier_models}
    ledger = Ledger(
        settings.ledger, settings.cache_dir, pricing=Pricing.from_settings(settings.ledger, aliases=aliases)
    )
    metrics = GatewayMetrics(catalog)  # its own CollectorRegistry, never the global one
    register_state_collectors(metrics.registry, catalog=catalog, rules=rules, ledger=ledger)
    limits = Limiter(
        settings.auth.limits, build_counters(settings.auth.limits), catalog, ledger, registry=metrics.registry
    )
    finish = chain_finishers(ledger_finisher(ledger), metrics_finisher(metrics, ledger), limits.finisher())
    chat = ChatService(
        catalog,
        rules,
        sessions,
        VerificationChain(routing.verifiers, {m.name: m.verifiers for m in settings.local_models}),
        finish,
        compressors=build_compressors(settings, catalog),
        stores_answer=lambda request: stores_prompt(request, settings.ledger),
        request_log=settings.request_log,
    )
    keys = (
        KeyStore(
            ledger.database_url,
            refresh_interval_s=settings.auth.refresh_interval_s,
            timeout_s=settings.ledger.db_timeout_s,
        )
        if settings.auth.enabled
        else None
    )
    auth = Authenticator(keys, store_prompts=settings.ledger.store_prompts)
    services = Services(
        settings=settings, catalog=catalog, chat=chat, rules=rules, ledger=ledger, auth=auth, limits=limits
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.gather(*(b.start() for b in catalog.backends))
        for backend in catalog.backends:
            if not backend.ready:
                log.warning(
                    "model %s (%s tier) is unavailable: %s", backend.name, backend.tier, backend.not_ready_reason
                )
        await rules.start()
        await ledger.start()
        await limits.start()  # each key's frontier spend so far today and this month, from the ledger
        if keys is not None:
            await keys.start()  # after the ledger: it has applied the migrations that make the keys' table
        elif not is_loopback_host(settings.host):
            # auth.enabled: false, set on purpose, on an address other machines may reach: allowed, never quietly.
            log.critical(
                "running OPEN ON THE NETWORK: auth.enabled is false and the gateway listens on %s:%d, not on loopback; "
                "anyone who can reach that address may use every route, spend the frontier budget, and read the "
                "dashboard, the reports and the ledger's sessions. Set auth.enabled: true unless a proxy in front of "
                "it checks every caller.",
                settings.host,
                settings.port,
            )
        else:
            log.warning(
                "running OPEN: no API keys are checked; anyone who can reach %s:%d may use every route, the "
                "dashboard and the reports included. Start with a config file or set auth.enabled: true.",
                settings.host,
                settings.port,
            )
        # Everything built at start-up lives as long as the process: move it out of the collector's way. Without
        # this, full collections under load walked ~150k objects and stopped the event loop for 147-272 ms
        # (bench/overhead.py at 200 RPS: p99 559 ms before, 197 ms after; details in BENCHMARKS.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await rules.close()
            if keys is not None:
                await keys.close()
            await limits.close()
            await ledger.close()
            await sessions.close()
            await asyncio.gather(*(b.close() for b in catalog.backends))

    # FastAPI's telemetry hooks cost ~7 us a request and Tiergate exports its own metrics. No /docs or /redoc: their
    # pages load Swagger UI and ReDoc scripts from a CDN on the dashboard's origin, where the admin key sits in the
    # tab's sessionStorage. /openapi.json stays (schema-driven clients and the fuzz test read it).
    app = FastAPI(
        title="Tiergate",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.metrics = metrics
    install_error_handlers(app)
    install_routes(app)
    install_openapi(app)
    return app
