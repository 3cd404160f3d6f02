"""What the app holds for its lifetime, reached from a request without module globals."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gateway.auth.authenticator import Authenticator
from gateway.auth.limits import Limiter
from gateway.ledger.writer import Ledger
from gateway.settings import Settings
from router.catalog import ModelCatalog
from router.rule_store import RuleStore
from router.service import ChatService


@dataclass(slots=True)
class Services:
    settings: Settings
    catalog: ModelCatalog
    chat: ChatService
    rules: RuleStore
    ledger: Ledger
    auth: Authenticator
    limits: Limiter


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
