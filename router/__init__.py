"""Routing: internal request types, signals, scoring, escalation rules, decisions, verification, frontier backends."""
