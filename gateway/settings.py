"""Tiergate's configuration: one YAML file, validated strictly, overridable by `TIERGATE_*` environment variables.

Every field has a default, so no file at all means the embedded quick-start setup. Nested fields are reached from
the environment with `__`: `TIERGATE_PORT=9000`, `TIERGATE_LEDGER__DATABASE_URL=postgresql+psycopg://...`.
A bad file stops start-up with `ConfigError`, whose message names the file, the field and the problem.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from gateway.auth.limit_settings import LimitsSettings
from gateway.ledger.settings import LedgerSettings
from local_models.settings import LocalModelSettings
from prompt_compression.settings import CompressionSettings
from router.frontier.settings import FrontierModelSettings
from router.verification import DEFAULT_VERIFIERS, VERIFIERS


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoutingSettings(_Strict):
    rules_file: Path | None = Field(
        None,
        description="Escalation rules YAML, reloaded on change. Empty means the shipped escalation_rules/default.yaml.",
    )
    verifiers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VERIFIERS),
        description=f"Checks run on local answers; a failure escalates once. Known: {', '.join(sorted(VERIFIERS))}.",
    )
    max_sessions: int = Field(10_000, ge=1, le=10_000_000, description="Sessions whose state the router keeps.")
    session_ttl_s: float = Field(3600.0, gt=0, description="A session idle this long is forgotten.")
    session_store_url: str | None = Field(
        None,
        description="redis://host:port/db of a Redis server that holds session state shared by every replica, so a "
        "session's steps may land on any of them. Empty: each process keeps its own in memory (max_sessions bounds "
        "it). An unreachable Redis never fails a request: it is routed without session state, with a warning.",
    )
    session_store_timeout_s: float = Field(
        0.25, gt=0, le=30, description="How long one read or write of the shared session store may take."
    )

    @field_validator("session_store_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value.strip()

    @field_validator("verifiers")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(VERIFIERS))
        if unknown:
            raise ValueError(f"unknown verifiers {', '.join(unknown)}; known: {', '.join(sorted(VERIFIERS))}")
        return names


class CompressionTiers(_Strict):
    local: CompressionSettings = Field(
        default_factory=CompressionSettings,
        description="Compression for the local tier; its budget is the model's context minus room for the answer.",
    )
    frontier: CompressionSettings = Field(
        default_factory=lambda: CompressionSettings(enabled=False),
        description="Compression for the frontier tier (off by default: large contexts, exact pass-through).",
    )


class AuthSettings(_Strict):
    """Who may call the gateway. Keys live in the ledger database (`tiergate keys create|list|revoke`).

    One section for callers: the rate limiter's fields (its Redis URL, window sizes) join these here."""

    enabled: bool | None = Field(
        None,
        description="Require `Authorization: Bearer KEY` on `/v1/*` and an admin key on `/admin/*`, the dashboard's "
        "data and reports. Null: on when the gateway starts with a config file or listens on an address other than "
        "loopback (127.0.0.0/8, ::1, localhost); off only for the quick start on loopback without a config file "
        "(which then logs loudly that it runs open).",
    )
    refresh_interval_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How often the key set is reloaded from the database, so created and revoked keys take effect "
        "within this many seconds without a restart.",
    )
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings,
        description="Per-key rate limits and frontier budgets: counters in memory or Redis, window, threshold bias.",
    )


class Settings(BaseSettings):
    """The whole configuration. `load_settings` builds it from a file and the environment."""

    model_config = SettingsConfigDict(env_prefix="TIERGATE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65_535, description="Port to listen on (0 picks a free one).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    request_log: bool = Field(
        True,
        description="One JSON log line per request (logger `tiergate.requests`). Turn off where the ledger and "
        "metrics are enough: it saves the line's encoding and write on every request.",
    )
    cache_dir: Path = Field(
        Path("~/.cache/tiergate"), description="Where the embedded model is assembled and other caches live."
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="Largest request body accepted (413 beyond)."
    )
    max_messages: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Most messages one chat request may carry (400 beyond); counted before any message is validated.",
    )
    shutdown_grace_s: int = Field(
        30, ge=0, le=3600, description="On SIGTERM, how long in-flight requests may finish before they are cut."
    )
    local_models: list[LocalModelSettings] = Field(
        default_factory=lambda: [LocalModelSettings()],
        description="Local GGUF models. The first one is the local tier's default (model name `local`). Empty (`[]`): "
        "a frontier-only gateway; `auto` then always answers from the frontier tier and `local` is an unknown model.",
    )
    frontier_models: list[FrontierModelSettings] = Field(
        default_factory=list,
        description="Frontier models. The first one is the frontier tier's default (model name `frontier`).",
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings, description="Rules, verification, sessions.")
    compression: CompressionTiers = Field(
        default_factory=CompressionTiers, description="Prompt compression of tool-calling requests, per tier."
    )
    ledger: LedgerSettings = Field(
        default_factory=LedgerSettings, description="Request ledger: database, prices, feedback metrics."
    )
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys: on, off, refresh interval.")

    @field_validator("cache_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [m.name for m in self.local_models] + [m.name for m in self.frontier_models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        reserved = sorted(set(names) & {"auto", "local", "frontier"})
        if reserved:
            raise ValueError(f"model names auto, local and frontier are reserved; used: {', '.join(reserved)}")
        return self


def is_loopback_host(host: str) -> bool:
    """Whether `host` is reachable from this machine only: 127.0.0.0/8, ::1 or `localhost`."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `config_file`, `TIERGATE_*` variables and `overrides`; overrides win, then the environment."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file}: not found")

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            return tuple(sources)

    where = f"config file {config_file}" if config_file else "configuration"
    try:
        settings = _FromFile(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None
    except Exception as exc:  # a YAML syntax error, an unreadable file
        raise ConfigError(f"{where}: {exc}") from None
    if settings.auth.enabled is None:
        # A config file or a non-loopback address means a deployment (the Docker image listens on 0.0.0.0 without a
        # file): keys are checked unless the config says otherwise. Only the quick start on loopback runs open.
        deployed = config_file is not None or not is_loopback_host(settings.host)
        auth = settings.auth.model_copy(update={"enabled": deployed})
        settings = settings.model_copy(update={"auth": auth})
    return settings
