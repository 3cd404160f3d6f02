"""The route table: paths to handlers, nothing else. Which key a path needs follows from the path (`_guard`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI

from gateway.auth.dependencies import require_admin, require_key
from gateway.chat import create_chat_completion
from gateway.dashboard import get_dashboard, get_dashboard_asset, get_dashboard_data, get_metrics
from gateway.dashboard.session_view import get_session, get_sessions
from gateway.health import healthz, list_models, readyz, rules_status
from gateway.outcomes import get_cost_report, post_feedback

# Admin scope: operating the gateway and reading everyone's spend. Any other /v1/ path needs a key of any scope.
# Open on purpose: /healthz and /readyz (probes), /metrics (Prometheus scrapes; labels never carry a key, user or
# session) and the dashboard page and assets (no data in them: the page asks for an admin key when its data is 401).
_ADMIN_PREFIXES = ("/admin/", "/dashboard/data", "/dashboard/sessions", "/v1/reports/")


def _guard(path: str) -> list[Any]:
    if path.startswith(_ADMIN_PREFIXES):
        return [Depends(require_admin)]
    if path.startswith("/v1/"):
        return [Depends(require_key)]
    return []


def install_routes(app: FastAPI) -> None:
    def route(path: str, handler: Callable[..., Any], **options: Any) -> None:
        app.add_api_route(path, handler, dependencies=_guard(path), **options)

    route("/v1/chat/completions", create_chat_completion, methods=["POST"])
    route("/v1/models", list_models, methods=["GET"])
    route("/v1/feedback", post_feedback, methods=["POST"])
    route("/v1/reports/cost", get_cost_report, methods=["GET"])
    route("/healthz", healthz, methods=["GET"])
    route("/readyz", readyz, methods=["GET"])
    route("/admin/rules", rules_status, methods=["GET"])
    route("/metrics", get_metrics, methods=["GET"], include_in_schema=False)
    route("/dashboard", get_dashboard, methods=["GET"], include_in_schema=False)
    route("/dashboard/data", get_dashboard_data, methods=["GET"])
    route("/dashboard/sessions", get_sessions, methods=["GET"])
    route("/dashboard/sessions/{session_id:path}", get_session, methods=["GET"])  # keyed ids hold a `/`
    route("/dashboard/assets/{name}", get_dashboard_asset, methods=["GET"], include_in_schema=False)
