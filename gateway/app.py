"""`create_app(settings)`: the one place where the parts are built and wired together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.errors import install_error_handlers
from gateway.routes import install_routes
from gateway.settings import Settings
from gateway.state import Services
from local_models.backend import LocalBackend
from router.backend import Backend
from router.catalog import ModelCatalog
from router.frontier import build_frontier_backend
from router.rule_store import RuleStore
from router.rules import default_rules_path
from router.service import ChatService
from router.sessions import InMemorySessionStore
from router.verification import VerificationChain

log = logging.getLogger("tiergate.app")


def build_backends(settings: Settings) -> list[Backend]:
    backends: list[Backend] = [LocalBackend(m, settings.cache_dir) for m in settings.local_models]
    backends += [build_frontier_backend(m) for m in settings.frontier_models]
    return backends


def create_app(settings: Settings) -> FastAPI:
    """Build the app. A bad rules file raises `router.rules.RulesError` here, before anything serves."""
    catalog = ModelCatalog(build_backends(settings))
    routing = settings.routing
    rules = RuleStore(routing.rules_file or default_rules_path())
    sessions = InMemorySessionStore(max_sessions=routing.max_sessions, ttl_s=routing.session_ttl_s)
    chat = ChatService(catalog, rules, sessions, VerificationChain(routing.verifiers))
    services = Services(settings=settings, catalog=catalog, chat=chat, rules=rules)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.gather(*(b.start() for b in catalog.backends))
        for backend in catalog.backends:
            if not backend.ready:
                log.warning(
                    "model %s (%s tier) is unavailable: %s", backend.name, backend.tier, backend.not_ready_reason
                )
        await rules.start()
        try:
            yield
        finally:
            await rules.close()
            await sessions.close()
            await asyncio.gather(*(b.close() for b in catalog.backends))

    app = FastAPI(title="Tiergate", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    install_error_handlers(app)
    install_routes(app)
    return app
