"""Shared fixtures: the real gateway on loopback, serving the embedded model."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.gateway_server import GatewayProcess

LOCAL_TEST_MODEL = {
    "name": "gemma3-270m",
    "context_tokens": 4096,
    "max_queue": 1,
    "default_max_tokens": 64,
}


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway for the read-only tests: the embedded model, a queue of one behind the running generation."""
    workdir = tmp_path_factory.mktemp("gateway")
    proc = GatewayProcess({"local_models": [LOCAL_TEST_MODEL]}, workdir)
    proc.start()
    yield proc
    proc.stop()
