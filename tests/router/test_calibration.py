"""`tiergate calibrate`: the threshold it writes escalates the target share of the traffic it was computed on, and
the rules file keeps every other byte."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from numpy.typing import NDArray
from ruamel.yaml import YAML
from sqlalchemy import insert

from gateway.ledger.database import make_engine, upgrade
from gateway.ledger.models import RequestRow
from router.chat import ChatRequest, Message
from router.evaluation.calibration import main
from router.evaluation.ledger_source import signals_from_dict
from router.rules import default_rules_path, load_rules
from router.signals import SignalContext, extract_signals

REPO = Path(__file__).resolve().parents[2]


def _ledger(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    base = {
        "requested_model": "auto",
        "tier": "frontier",
        "rule": "default",
        "cost_usd": Decimal(0),
        "wasted_cost_usd": Decimal(0),
        "counterfactual_usd": Decimal(0),
        "latency_ms": 10.0,
        "status": 200,
    }
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(RequestRow),
                [
                    {**base, "id": f"r{i}", "created_at": now - timedelta(minutes=i % 600), **row}
                    for i, row in enumerate(rows)
                ],
            )
    finally:
        engine.dispose()
    return url


def _beta_scores(n: int, seed: int) -> NDArray[np.float64]:
    return np.random.default_rng(seed).beta(2.0, 5.0, size=n)


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_bytes(default_rules_path().read_bytes())
    return path


def _changed_lines(before: bytes, after: bytes) -> list[tuple[bytes, bytes]]:
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


@pytest.mark.parametrize("target", [0.25, 0.10])
def test_threshold_from_logged_scores_hits_the_target_rate(
    tmp_path: Path, rules_file: Path, target: float, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = _beta_scores(10_000, seed=7)
    url = _ledger(tmp_path, [{"score": float(s)} for s in scores])
    before = rules_file.read_bytes()

    code = main(["--rules", str(rules_file), "--target-escalation", str(target), "--database-url", url,
                 "--scores", "logged"])  # fmt: skip

    assert code == 0, capsys.readouterr().err
    rules = load_rules(rules_file)  # still a valid rules file
    rate = float(np.mean(scores >= rules.threshold))  # the default rule: score >= threshold escalates
    assert abs(rate - target) <= 0.01
    # Only the threshold's value changed: comments, order and every other rule are byte for byte as they were.
    changed = _changed_lines(before, rules_file.read_bytes())
    assert changed == [(b"threshold: 0.5\n", f"threshold: {rules.threshold!r}\n".encode())]
    out = capsys.readouterr().out
    assert "10000" in out and "0.5" in out and f"{target:.1%}" in out


def test_rescored_scores_follow_the_weights_of_the_file_not_the_logged_score(
    tmp_path: Path, rules_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    signal_rows = [
        {
            "model": "auto",
            "content_tokens": int(tokens),
            "math": int(rng.integers(0, 5)),
            "reasoning_markers": int(rng.integers(0, 4)),
            "code_markers": int(rng.integers(0, 5)),
            "fits_local_context": True,
        }
        for tokens in rng.lognormal(4.0, 1.5, size=3000).astype(int) + 1
    ]
    # The logged scores are from some other scorer; calibrating on them would give a different threshold.
    url = _ledger(tmp_path, [{"score": 0.99, "signals": signals} for signals in signal_rows])

    assert main(["--rules", str(rules_file), "--target-escalation", "0.25", "--database-url", url]) == 0
    rules = load_rules(rules_file)
    rescored = np.array([rules.score(signals_from_dict(signals)) for signals in signal_rows])
    assert abs(float(np.mean(rescored >= rules.threshold)) - 0.25) <= 0.01
    assert "re-scored under this file" in capsys.readouterr().out


def test_too_few_scores_is_refused_and_the_file_is_left_alone(
    tmp_path: Path, rules_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _ledger(tmp_path, [{"score": float(s)} for s in _beta_scores(30, seed=1)])
    before = rules_file.read_bytes()

    code = main(["--rules", str(rules_file), "--target-escalation", "0.25", "--database-url", url,
                 "--scores", "logged"])  # fmt: skip

    assert code == 1
    err = capsys.readouterr().err
    assert "only 30 scores" in err and "at least 50" in err and "unchanged" in err
    assert rules_file.read_bytes() == before


def test_a_named_rule_is_calibrated_from_a_prompt_file_by_the_command(tmp_path: Path, rules_file: Path) -> None:
    rng = np.random.default_rng(11)
    words = ["prove", "compare", "integral", "implement", "python", "the", "a", "cat", "step", "by", "why", "sum"]
    prompts = tmp_path / "prompts.jsonl"
    lines = [orjson.dumps({"prompt": " ".join(rng.choice(words, size=int(rng.integers(1, 400))))}) for _ in range(400)]
    prompts.write_bytes(b"\n".join(lines) + b"\n")
    before = rules_file.read_bytes()

    done = subprocess.run(
        [sys.executable, "-m", "gateway", "calibrate", "--rules", str(rules_file), "--rule", "local-busy",
         "--target-escalation", "0.25", "--prompts", str(prompts)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    rules = load_rules(rules_file)
    rule = next(r for r in rules.rules if r.name == "local-busy")
    changed = _changed_lines(before, rules_file.read_bytes())
    assert len(changed) == 1 and b"local_queue_depth" in changed[0][0]  # the local-busy rule's line, only it
    assert rules.threshold == 0.5
    assert "new rule local-busy (score >=)" in done.stdout
    new_threshold = YAML(typ="safe").load(rules_file.read_text())["rules"][5]["when"]["score"][">="]
    assert rule.name == "local-busy" and new_threshold != 0.3
    # The share of those prompts, scored as the router scores a request, that the rule's condition now takes.
    context = SignalContext(local_context_tokens=8192)
    texts = [orjson.loads(line)["prompt"] for line in lines]
    requests = [ChatRequest("p", "auto", [Message(role="user", content=text)]) for text in texts]
    scored = np.array([rules.score(extract_signals(request, context)) for request in requests])
    assert abs(float(np.mean(scored >= new_threshold)) - 0.25) <= 0.01
