"""The Redis server the shared-session tests use (127.0.0.1:6379), or a skip that says why it cannot be used."""

from __future__ import annotations

import uuid

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def require_redis() -> str:
    """The server's URL; skips the calling test when no Redis answers there."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server answers at {REDIS_HOST}:{REDIS_PORT}: {exc}")
    finally:
        client.close()
    return REDIS_URL


def unique_session(prefix: str) -> str:
    """A session id no other run uses, so that tests sharing the server never see each other's sessions."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def forget_sessions(*session_ids: str) -> None:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2)
    try:
        if session_ids:
            client.delete(*(f"tiergate:session:{s}" for s in session_ids))
    finally:
        client.close()
