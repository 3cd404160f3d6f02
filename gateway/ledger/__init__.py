"""The ledger: one row per request with its cost, outcomes that arrive later, and what each success cost.

settings   LedgerSettings, the `ledger:` section of the config
record     RequestRecord, what the request path fills
writer     Ledger: record() off the request path, batches, spool, flush on close
pricing    token and hourly prices (litellm's map, config overrides)
models     the tables; migrations/ creates them
database   engines, upgrade/downgrade
feedback   submit_feedback (POST /v1/feedback)
report     cost_report (GET /v1/reports/cost) and the text table
cli        db_main (`tiergate db`), report_main (`tiergate report`)
"""

from gateway.ledger.cli import db_main, report_main
from gateway.ledger.database import downgrade, upgrade
from gateway.ledger.feedback import submit_feedback
from gateway.ledger.pricing import Pricing
from gateway.ledger.record import RequestRecord
from gateway.ledger.report import cost_report
from gateway.ledger.settings import LedgerSettings, MetricSettings, ModelPrice
from gateway.ledger.writer import Ledger, LedgerStats

__all__ = [
    "Ledger",
    "LedgerSettings",
    "LedgerStats",
    "MetricSettings",
    "ModelPrice",
    "Pricing",
    "RequestRecord",
    "cost_report",
    "db_main",
    "downgrade",
    "report_main",
    "submit_feedback",
    "upgrade",
]
