"""The route table: paths to handlers, nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.chat import create_chat_completion
from gateway.dashboard import get_dashboard, get_dashboard_asset, get_dashboard_data, get_metrics
from gateway.health import healthz, list_models, readyz, rules_status
from gateway.outcomes import get_cost_report, post_feedback


def install_routes(app: FastAPI) -> None:
    app.add_api_route("/v1/chat/completions", create_chat_completion, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/feedback", post_feedback, methods=["POST"])
    app.add_api_route("/v1/reports/cost", get_cost_report, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/admin/rules", rules_status, methods=["GET"])
    app.add_api_route("/metrics", get_metrics, methods=["GET"], include_in_schema=False)
    app.add_api_route("/dashboard", get_dashboard, methods=["GET"], include_in_schema=False)
    app.add_api_route("/dashboard/data", get_dashboard_data, methods=["GET"])
    app.add_api_route("/dashboard/assets/{name}", get_dashboard_asset, methods=["GET"], include_in_schema=False)
