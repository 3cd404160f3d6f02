"""The ledger's section of the config (`ledger:` in the YAML file, `TIERGATE_LEDGER__*` in the environment)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DATABASE_FILE_NAME = "ledger.sqlite3"
SPOOL_DIR_NAME = "ledger-spool"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPrice(_Strict):
    """Token prices for one model, in USD per million tokens. Wins over litellm's price map."""

    input: Decimal = Field(ge=0, description="USD per million prompt tokens that were not served from a cache.")
    output: Decimal = Field(ge=0, description="USD per million completion tokens.")
    cached_input: Decimal | None = Field(
        None, ge=0, description="USD per million prompt tokens read from a cache; empty bills them as input."
    )


class LocalCostSettings(_Strict):
    usd_per_hour: Decimal = Field(
        Decimal("0.40"),
        ge=0,
        description="What the host that runs the local models costs per hour; a request is charged for the seconds "
        "it spent generating. The default is a placeholder: set it to your host's price.",
    )


class MetricSettings(_Strict):
    """A feedback metric. Feedback naming an undeclared metric is refused."""

    type: Literal["boolean", "float"] = Field("boolean", description="boolean: true is a success; float: a score.")
    higher_is_better: bool = Field(True, description="For float metrics: whether a larger value is better.")
    threshold: float | None = Field(
        None, description="For float metrics: the value at or beyond which (in the better direction) it is a success."
    )

    @model_validator(mode="after")
    def _threshold_matches_type(self) -> MetricSettings:
        if self.type == "float" and self.threshold is None:
            raise ValueError("a float metric needs a threshold that says what counts as a success")
        if self.type == "boolean" and self.threshold is not None:
            raise ValueError("a boolean metric takes no threshold")
        return self

    def succeeded(self, value: float) -> bool:
        """Whether a stored value (booleans are stored as 1.0 / 0.0) counts as a success."""
        if self.type == "boolean":
            return value >= 0.5
        assert self.threshold is not None  # guaranteed by the validator
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


class LedgerSettings(_Strict):
    """Where and how requests are recorded, priced and reported."""

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the ledger database: sqlite:///path or postgresql+psycopg://user@host/db. "
        f"Empty means the SQLite file {DATABASE_FILE_NAME} in the cache directory.",
    )
    apply_migrations: bool = Field(
        True, description="Bring the schema up to date at start-up. Turn off where migrations run as a separate step."
    )
    store_prompts: bool = Field(
        False,
        description="Store each request's messages and answer (as JSON) for replay and export. Off by default: prompts "
        "may be private.",
    )
    store_prompts_for_sessions: bool = Field(
        False,
        description="Store the messages and answer of every request that names a session (`X-Tiergate-Session` or "
        "`user`), even where store_prompts is off: the steps `tiergate export trajectories` reads.",
    )
    batch_max_rows: int = Field(500, ge=1, le=100_000, description="Rows per insert; a full batch is written at once.")
    batch_interval_ms: int = Field(
        200, ge=1, le=60_000, description="A partial batch is written after at most this long."
    )
    queue_max_rows: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Rows waiting in memory to be written; beyond it rows are dropped (counted and logged), "
        "never making a request wait.",
    )
    spool_dir: Path | None = Field(
        None,
        description=f"Where rows wait on disk while the database is unreachable. Empty means {SPOOL_DIR_NAME} "
        "in the cache directory.",
    )
    spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Most the spool may hold; beyond it rows are dropped (counted, logged)."
    )
    retry_interval_ms: int = Field(
        1000, ge=10, le=600_000, description="How often the writer tries an unreachable database again."
    )
    db_timeout_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a write waits for a locked SQLite file or a PostgreSQL connection before its rows go "
        "to the spool.",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Per-model token prices; they win over litellm's bundled price map."
    )
    local_cost: LocalCostSettings = Field(
        default_factory=LocalCostSettings, description="How the local tier is charged."
    )
    default_frontier_model: str = Field(
        "gpt-4.1",
        min_length=1,
        description="Each row also stores what its tokens would have cost on this model, so savings against sending "
        "everything to the frontier are a query.",
    )
    metrics: dict[str, MetricSettings] = Field(
        default_factory=lambda: {"success": MetricSettings()},
        min_length=1,
        description="Feedback metrics, by name. Reports count successes by one of them (`success` by default).",
    )

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return normalize_database_url(value)

    @field_validator("spool_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def resolved_database_url(self, cache_dir: Path) -> str:
        if self.database_url is not None:
            return self.database_url
        return str(URL.create("sqlite", database=str(cache_dir.expanduser() / DATABASE_FILE_NAME)))

    def resolved_spool_dir(self, cache_dir: Path) -> Path:
        return self.spool_dir if self.spool_dir is not None else cache_dir.expanduser() / SPOOL_DIR_NAME

    def report_metric(self) -> str:
        """The metric reports use when none is named: `success` where declared, else the first one declared."""
        return "success" if "success" in self.metrics else next(iter(self.metrics))


def normalize_database_url(value: str) -> str:
    """Check that a URL names SQLite or PostgreSQL, and pick psycopg 3 (the driver installed) for PostgreSQL."""
    if value.startswith("postgres://"):  # Heroku-style spelling, which SQLAlchemy does not accept
        value = "postgresql://" + value.removeprefix("postgres://")
    try:
        url = make_url(value)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"the ledger works on sqlite and postgresql, not {backend}")
    if backend == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)
