"""`tiergate train-router --from-ledger`: labels from local outcomes and escalations, a scorer that learned them,
and a clear refusal when the ledger holds nothing to learn from."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from gateway.ledger.database import make_engine, upgrade
from gateway.ledger.models import OutcomeRow, RequestRow
from router.evaluation.cli import train_main
from router.evaluation.learned import DEFAULT_ARTIFACT, LearnedModel, LearnedScorer

EASY = ["say hello to {}", "what is the capital of {}", "spell the name {}", "greet {} politely"]
HARD = ["prove the theorem about {} step by step", "derive the integral formula for {} and compare the proofs"]
NAMES = ["ana", "bo", "carla", "dev", "eli", "fay", "gus", "hal", "ivy", "jon", "kim", "lee"]


def _ledger(tmp_path: Path, rows: list[dict[str, Any]], outcomes: list[dict[str, Any]]) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    upgrade(url)
    now = datetime.now(UTC)
    base = {
        "created_at": now,
        "requested_model": "auto",
        "escalated": False,
        "rule": "default",
        "cost_usd": Decimal(0),
        "wasted_cost_usd": Decimal(0),
        "counterfactual_usd": Decimal(0),
        "latency_ms": 10.0,
        "status": 200,
    }
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(RequestRow), [{**base, **row} for row in rows])
            if outcomes:
                connection.execute(insert(OutcomeRow), [{"created_at": now, **o} for o in outcomes])
    finally:
        engine.dispose()
    return url


def _prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def test_trains_on_local_outcomes_and_escalations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for i, name in enumerate(NAMES):
        for j, template in enumerate(EASY):  # answered locally, and the user said it was fine
            rows.append({"id": f"e{i}-{j}", "tier": "local", "prompt": _prompt(template.format(name))})
            outcomes.append({"request_id": f"e{i}-{j}", "metric": "success", "value": 1.0})
        # a local answer the user rejected, and one that failed verification and escalated
        rows.append({"id": f"h{i}-0", "tier": "local", "prompt": _prompt(HARD[0].format(name))})
        outcomes.append({"request_id": f"h{i}-0", "metric": "success", "value": 0.0})
        rows.append({"id": f"h{i}-1", "tier": "frontier", "escalated": True, "prompt": _prompt(HARD[1].format(name))})
        # answered by the frontier tier first: says nothing about the local model
        rows.append({"id": f"f{i}", "tier": "frontier", "prompt": _prompt(f"hello {name}")})
    url = _ledger(tmp_path, rows, outcomes)
    out = tmp_path / "scorer.npz"

    assert train_main(["--from-ledger", "--database-url", url, "--out", str(out), "--folds", "2"]) == 0

    assert "72 labelled prompts (24 where the local model was not good enough)" in capsys.readouterr().out
    scorer = LearnedScorer(LearnedModel.load(out))
    unseen = ["zed", "yan"]
    easy = [scorer.score(t.format(n)) for t in EASY for n in unseen]
    hard = [scorer.score(t.format(n)) for t in HARD for n in unseen]
    assert min(hard) > max(easy)


def test_refuses_without_stored_prompts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": f"r{i}", "tier": "local"} for i in range(40)]
    outcomes = [{"request_id": f"r{i}", "metric": "success", "value": float(i % 2)} for i in range(40)]
    url = _ledger(tmp_path, rows, outcomes)
    out = tmp_path / "scorer.npz"

    assert train_main(["--from-ledger", "--database-url", url, "--out", str(out)]) == 1

    err = capsys.readouterr().err
    assert "0 labelled prompts" in err and "among 40 requests" in err and "(0 with a stored prompt)" in err
    assert "store_prompts" in err and not out.exists()


def test_from_ledger_needs_its_own_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped scorer is never overwritten by a gateway's own data by accident."""
    shipped = DEFAULT_ARTIFACT.read_bytes()
    assert train_main(["--from-ledger", "--database-url", f"sqlite:///{tmp_path / 'ledger.sqlite3'}"]) == 2

    assert "--out" in capsys.readouterr().err
    assert DEFAULT_ARTIFACT.read_bytes() == shipped
