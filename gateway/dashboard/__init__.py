"""The built-in dashboard and the Prometheus endpoint.

handlers        GET /metrics, /dashboard, /dashboard/assets/{name}, /dashboard/data
data            the JSON the page draws: the ledger's series, cost report and rule breakdown, the rules in force
session_view    GET /dashboard/sessions and /dashboard/sessions/{id}: recent agent sessions, one session's steps
index.html      the page; dashboard.js draws its charts as inline SVG; sessions.js the session view;
                dashboard.css. No build step, nothing fetched from elsewhere: the files ship inside this package.
"""

from gateway.dashboard.handlers import get_dashboard, get_dashboard_asset, get_dashboard_data, get_metrics

__all__ = ["get_dashboard", "get_dashboard_asset", "get_dashboard_data", "get_metrics"]
