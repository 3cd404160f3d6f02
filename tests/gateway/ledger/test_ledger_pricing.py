"""Costs on the rows: frontier tokens at litellm's prices (config overrides win), local seconds at the hourly price,
the wasted attempt, and the counterfactual on the default frontier model."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import LedgerFactory
from ledger_testkit import frontier_record, local_record
from sqlalchemy import select

from gateway.ledger.database import make_engine
from gateway.ledger.models import RequestRow
from gateway.ledger.record import RequestRecord
from gateway.ledger.settings import LedgerSettings, LocalCostSettings, ModelPrice
from gateway.ledger.writer import Ledger
from gateway.settings import ConfigError

TWELVE_PLACES = Decimal("1e-12")


def _expected_from_map(entry: Mapping[str, Any], tokens_in: int, tokens_out: int, cached: int) -> Decimal:
    """The cost by hand: uncached prompt tokens at the input price, cached ones at the cache-read price."""
    per_in = Decimal(str(entry["input_cost_per_token"]))
    per_out = Decimal(str(entry["output_cost_per_token"]))
    per_cached = Decimal(str(entry["cache_read_input_token_cost"]))
    return ((tokens_in - cached) * per_in + cached * per_cached + tokens_out * per_out).quantize(TWELVE_PLACES)


def _rows(database_url: str) -> dict[str, Any]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return {row.id: row for row in connection.execute(select(RequestRow.__table__))}
    finally:
        engine.dispose()


def _record_all(ledger: Ledger, records: list[RequestRecord]) -> None:
    async def scenario() -> None:
        await ledger.start()
        for record in records:
            ledger.record(record)
        await ledger.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("model", ["gpt-4.1", "gpt-4o", "claude-sonnet-4-5"])
def test_frontier_cost_comes_from_litellms_price_map(
    model: str, database_url: str, make_ledger: LedgerFactory, price_map: Mapping[str, Mapping[str, Any]]
) -> None:
    _record_all(
        make_ledger(database_url),
        [frontier_record("r", model=model, tokens_in=3_217, tokens_cached=1_024, tokens_out=411)],
    )
    row = _rows(database_url)["r"]
    assert row.cost_usd == _expected_from_map(price_map[model], 3_217, 411, 1_024)
    assert row.cost_usd > 0
    assert (row.tokens_in, row.tokens_out, row.tokens_cached) == (3_217, 411, 1_024)


def test_a_configured_price_wins_over_the_map(sqlite_url: str, make_ledger: LedgerFactory) -> None:
    prices = {"gpt-4.1": ModelPrice(input=Decimal("1.10"), output=Decimal("4.40"))}
    _record_all(make_ledger(sqlite_url, prices=prices), [frontier_record("r", tokens_in=2_000, tokens_out=500)])
    # no cached_input price: cached tokens are billed as input
    expected = (Decimal("1.10") * 2_000 + Decimal("4.40") * 500) / 1_000_000
    assert _rows(sqlite_url)["r"].cost_usd == expected


def test_a_provider_prefixed_name_is_priced_as_the_model(
    sqlite_url: str, make_ledger: LedgerFactory, price_map: Mapping[str, Mapping[str, Any]]
) -> None:
    _record_all(make_ledger(sqlite_url), [frontier_record("r", model="openai/gpt-4.1", tokens_in=100, tokens_out=10)])
    assert _rows(sqlite_url)["r"].cost_usd == _expected_from_map(price_map["gpt-4.1"], 100, 10, 0)


def test_local_cost_is_the_hosts_hourly_price_times_compute_seconds(
    database_url: str, make_ledger: LedgerFactory
) -> None:
    ledger = make_ledger(database_url, local_cost=LocalCostSettings(usd_per_hour=Decimal("3.60")))
    _record_all(ledger, [local_record("r", compute_ms=2_500.0)])
    assert _rows(database_url)["r"].cost_usd == Decimal("3.60") * Decimal("2.5") / 3600  # $0.0025


def test_a_wasted_local_attempt_is_charged_to_the_request(
    sqlite_url: str, make_ledger: LedgerFactory, price_map: Mapping[str, Mapping[str, Any]]
) -> None:
    ledger = make_ledger(sqlite_url, local_cost=LocalCostSettings(usd_per_hour=Decimal("1.80")))
    escalated = frontier_record(
        "r", tokens_in=800, tokens_out=60, wasted_tier="local", wasted_model="gemma3-270m", wasted_compute_ms=4_000.0
    )
    _record_all(ledger, [escalated, frontier_record("plain", tokens_in=800, tokens_out=60)])
    rows = _rows(sqlite_url)
    assert rows["r"].wasted_cost_usd == Decimal("1.80") * 4 / 3600  # $0.002
    assert rows["r"].cost_usd == _expected_from_map(price_map["gpt-4.1"], 800, 60, 0)
    assert rows["r"].escalated and not rows["plain"].escalated
    assert rows["plain"].wasted_cost_usd == 0


def test_every_row_stores_its_cost_on_the_default_frontier_model(
    sqlite_url: str, make_ledger: LedgerFactory, price_map: Mapping[str, Mapping[str, Any]]
) -> None:
    ledger = make_ledger(sqlite_url, default_frontier_model="gpt-4o")
    _record_all(ledger, [local_record("local", tokens_in=5_000, tokens_cached=4_096, tokens_out=250)])
    row = _rows(sqlite_url)["local"]
    assert row.counterfactual_usd == _expected_from_map(price_map["gpt-4o"], 5_000, 250, 4_096)
    assert row.counterfactual_usd > row.cost_usd


def test_prompt_response_and_step_are_stored_as_the_record_carries_them(
    sqlite_url: str, make_ledger: LedgerFactory
) -> None:
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    answer = {"role": "assistant", "content": "Rain."}
    _record_all(
        make_ledger(sqlite_url),
        [local_record("kept", prompt=messages, response=answer, step=3), local_record("not kept")],
    )
    rows = _rows(sqlite_url)
    assert (rows["kept"].prompt, rows["kept"].response, rows["kept"].step) == (messages, answer, 3)
    assert (rows["not kept"].prompt, rows["not kept"].response, rows["not kept"].step) == (None, None, None)


def test_start_refuses_a_default_frontier_model_without_a_price(
    sqlite_url: str, make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    ledger = make_ledger(sqlite_url, default_frontier_model="no-such-model-anywhere")
    with pytest.raises(ConfigError, match="default_frontier_model"):
        asyncio.run(ledger.start())


def test_settings_refuse_unknown_fields_and_databases() -> None:
    with pytest.raises(ValueError, match="extra"):
        LedgerSettings.model_validate({"batch_rows": 10})
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        LedgerSettings(database_url="mysql://root@localhost/db")
    assert LedgerSettings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"


def test_our_price_map_is_the_one_litellm_loads(price_map: Mapping[str, Mapping[str, Any]]) -> None:
    """We read litellm's bundled file without importing litellm (seconds); it must be what litellm itself uses."""
    import os

    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    for model in ("gpt-4.1", "gpt-4.1-mini", "gpt-4o", "claude-sonnet-4-5", "deepseek-chat"):
        theirs = litellm.model_cost[model]
        ours = price_map[model]
        for key in ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost"):
            assert ours.get(key) == theirs.get(key), (model, key)


def test_a_configured_model_name_is_priced_as_its_upstream_model(
    price_map: Mapping[str, Mapping[str, Any]],
) -> None:
    from gateway.ledger.pricing import Pricing

    pricing = Pricing(price_map, aliases={"gpt-test": "gpt-4.1-mini"})
    expected = _expected_from_map(price_map["gpt-4.1-mini"], 1_000, 100, 0)
    assert pricing.attempt_cost("frontier", "gpt-test", 1_000, 100, 0, 0.0) == expected
