"""What a request cost: frontier tokens at litellm's bundled prices (config overrides win), local seconds at the
host's hourly price. All Decimal; a float price from the map goes through `str` so that 2e-06 stays 0.000002.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from gateway.ledger.settings import LedgerSettings, LocalCostSettings, ModelPrice
from router.chat import Tier

log = logging.getLogger("tiergate.ledger")

MONEY_QUANTUM = Decimal("1e-12")
"""Costs are stored with 12 decimal places (the column's scale): a millionth of a millionth of a dollar."""
_PER_MILLION = Decimal(1_000_000)
_MS_PER_HOUR = Decimal(3_600_000)


_PRICE_FILE = "model_prices_and_context_window_backup.json"


def load_price_map() -> Mapping[str, Mapping[str, Any]]:
    """litellm's bundled price map, the file litellm itself loads with LITELLM_LOCAL_MODEL_COST_MAP=True.

    Read straight from the installed package rather than through `import litellm`, which takes seconds (11-15 s
    measured on a loaded 2-core machine, against 0.3 s for this read) and would slow every gateway start."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("litellm is not installed: its bundled price map is needed for frontier costs")
    path = Path(next(iter(spec.submodule_search_locations))) / _PRICE_FILE
    price_map: dict[str, Mapping[str, Any]] = orjson.loads(path.read_bytes())
    price_map.pop("sample_spec", None)  # the file's own documentation entry, not a model
    return price_map


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per token."""

    input: Decimal
    output: Decimal
    cached_input: Decimal

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> Decimal:
        cached = min(max(tokens_cached, 0), tokens_in)
        return (tokens_in - cached) * self.input + cached * self.cached_input + tokens_out * self.output

    @classmethod
    def from_config(cls, price: ModelPrice) -> TokenPrice:
        cached = price.cached_input if price.cached_input is not None else price.input
        return cls(price.input / _PER_MILLION, price.output / _PER_MILLION, cached / _PER_MILLION)

    @classmethod
    def from_price_map(cls, entry: Mapping[str, Any]) -> TokenPrice | None:
        raw_in, raw_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if raw_in is None or raw_out is None:
            return None
        raw_cached = entry.get("cache_read_input_token_cost")
        price_in = Decimal(str(raw_in))
        return cls(price_in, Decimal(str(raw_out)), Decimal(str(raw_cached)) if raw_cached is not None else price_in)


class Pricing:
    """Prices every attempt of a request. Lookups are dictionary reads, cached per model name."""

    def __init__(
        self,
        price_map: Mapping[str, Mapping[str, Any]],
        *,
        overrides: Mapping[str, ModelPrice] | None = None,
        local_cost: LocalCostSettings | None = None,
        default_frontier_model: str = "gpt-4.1",
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._price_map = price_map
        self._aliases = dict(aliases or {})
        """Configured model name -> the upstream model id its price is listed under (`gpt-test` -> `gpt-4.1-mini`)."""
        self._prices: dict[str, TokenPrice | None] = {
            name: TokenPrice.from_config(price) for name, price in (overrides or {}).items()
        }
        self._usd_per_hour = (local_cost or LocalCostSettings()).usd_per_hour
        self.default_frontier_model = default_frontier_model
        self._warned: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        settings: LedgerSettings,
        price_map: Mapping[str, Mapping[str, Any]] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> Pricing:
        return cls(
            load_price_map() if price_map is None else price_map,
            overrides=settings.prices,
            local_cost=settings.local_cost,
            default_frontier_model=settings.default_frontier_model,
            aliases=aliases,
        )

    def token_price(self, model: str) -> TokenPrice | None:
        """The model's price: a config override, else litellm's entry (with or without a `provider/` prefix)."""
        if model in self._prices:
            return self._prices[model]
        if model in self._aliases:
            price = self.token_price(self._aliases[model])
            self._prices[model] = price
            return price
        entry = self._price_map.get(model)
        if entry is None and "/" in model:
            entry = self._price_map.get(model.split("/", 1)[1])
        price = TokenPrice.from_price_map(entry) if entry is not None else None
        self._prices[model] = price
        return price

    def local_cost(self, compute_ms: float) -> Decimal:
        return self._usd_per_hour * Decimal(str(max(compute_ms, 0.0))) / _MS_PER_HOUR

    def attempt_cost(
        self,
        tier: Tier | None,
        model: str | None,
        tokens_in: int,
        tokens_out: int,
        tokens_cached: int,
        compute_ms: float,
    ) -> Decimal:
        """One attempt's cost. A configured token price wins for any model; else local is charged by the hour and
        frontier by litellm's price. A frontier model with no known price costs 0, with a warning once per model."""
        if model is None or tier is None:
            return Decimal(0)
        if tier == "local" and model not in self._prices:
            return quantize(self.local_cost(compute_ms))
        price = self.token_price(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price for model %r: its requests are recorded at cost 0; set ledger.prices", model)
            return Decimal(0)
        return quantize(price.cost(tokens_in, tokens_out, tokens_cached))

    def counterfactual_cost(self, tokens_in: int, tokens_out: int, tokens_cached: int) -> Decimal:
        """What the same tokens would have cost on the default frontier model."""
        price = self.token_price(self.default_frontier_model)
        return quantize(price.cost(tokens_in, tokens_out, tokens_cached)) if price is not None else Decimal(0)


def quantize(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANTUM)
