"""Hot reload of rules files: real files in tmp_path, the real watcher, and bounded polls."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.wire import ChatCompletionRequest
from router.rule_store import RuleStore
from router.rules import RulesError
from router.signals import SignalContext, extract_signals

RULES = """\
version: 1
threshold: {threshold}
rules:
  - name: images-need-vision
    when: {{images: {{">": 0}}}}
    action: frontier
"""
BODY = {"model": "auto", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
REQUEST = ChatCompletionRequest.model_validate(BODY).to_internal(request_id="t", raw=BODY)
SIGNALS = extract_signals(REQUEST, SignalContext(local_context_tokens=8192))


async def poll(predicate: Callable[[], bool], limit_s: float = 5.0) -> float:
    """Seconds until `predicate` holds; fails the test past `limit_s`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit_s:
            pytest.fail(f"condition not met within {limit_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def tier(store: RuleStore) -> str:
    return store.rules.decide(SIGNALS, REQUEST).action


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(threshold=1.0))
    return path


def test_an_edit_takes_effect_within_a_second(rules_path: Path) -> None:
    async def run() -> None:
        store = RuleStore(rules_path)
        await store.start()
        try:
            before = store.status()
            assert tier(store) == "local" and before.watching
            await asyncio.to_thread(rules_path.write_text, RULES.format(threshold=0.0))
            took = await poll(lambda: store.rules.version != before.version)
            assert took < 1.0
            assert tier(store) == "frontier"
            status = store.status()
            assert (status.reloads, status.failures, status.last_error) == (1, 0, None)
            assert status.loaded_at > before.loaded_at
        finally:
            await store.close()
        assert not store.status().watching

    asyncio.run(run())


def test_a_file_replaced_by_rename_is_reloaded(rules_path: Path) -> None:
    async def run() -> None:
        store = RuleStore(rules_path)
        await store.start()
        try:
            old = store.rules.version
            staged = rules_path.with_name(".rules.yaml.swp")  # as editors do: write aside, rename over
            await asyncio.to_thread(staged.write_text, RULES.format(threshold=0.0))
            await asyncio.to_thread(os.replace, staged, rules_path)
            assert await poll(lambda: store.rules.version != old) < 1.0
            assert tier(store) == "frontier"
        finally:
            await store.close()

    asyncio.run(run())


def test_an_invalid_file_is_refused_while_requests_keep_flowing(rules_path: Path) -> None:
    async def run() -> None:
        store = RuleStore(rules_path)
        await store.start()
        decided: list[str] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                decided.append(tier(store))
                await asyncio.sleep(0.002)

        flowing = asyncio.create_task(traffic())
        try:
            good = store.rules.version
            await asyncio.to_thread(rules_path.write_text, RULES.format(threshold=0.0).replace("images", "imagez"))
            await poll(lambda: "imagez" in (store.status().last_error or ""))
            status = store.status()
            assert status.version == good and tier(store) == "local"
            assert status.last_error is not None and "rules[0].when.imagez" in status.last_error
            assert status.last_error_at is not None
            served = len(decided)

            await asyncio.to_thread(rules_path.write_text, RULES.format(threshold=0.0))
            await poll(lambda: store.rules.version != good)
            assert store.status().last_error is None and tier(store) == "frontier"
            assert len(decided) > served  # requests were answered throughout
        finally:
            stop.set()
            await flowing
            await store.close()
        assert set(decided) <= {"local", "frontier"}

    asyncio.run(run())


def test_a_deleted_file_keeps_the_rules_in_force(rules_path: Path) -> None:
    async def run() -> None:
        store = RuleStore(rules_path)
        await store.start()
        try:
            version = store.rules.version
            await asyncio.to_thread(rules_path.unlink)
            await poll(lambda: store.status().failures >= 1)
            assert store.rules.version == version
            assert "cannot read" in (store.status().last_error or "")
            await asyncio.to_thread(rules_path.write_text, RULES.format(threshold=0.0))
            await poll(lambda: store.rules.version != version)
            assert store.status().last_error is None
        finally:
            await store.close()

    asyncio.run(run())


def test_reload_by_hand_reports_no_change_and_refuses_bad_files(rules_path: Path) -> None:
    store = RuleStore(rules_path)
    assert store.reload() is False
    rules_path.write_text("version: 1\nthreshold: 7\n")
    with pytest.raises(RulesError, match="threshold"):
        store.reload()
    rules_path.write_text(RULES.format(threshold=0.3))
    assert store.reload() is True
    status = store.status()
    assert (status.reloads, status.failures, status.last_error, status.watching) == (1, 1, None, False)
    assert json.loads(json.dumps(status.as_dict()))["version"] == store.rules.version


def test_an_invalid_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\n")
    with pytest.raises(RulesError, match="threshold"):
        RuleStore(path)


def test_other_files_in_the_folder_do_not_count_the_same_bad_file_again(rules_path: Path) -> None:
    async def run() -> None:
        store = RuleStore(rules_path)
        await store.start()
        try:
            await asyncio.to_thread(rules_path.write_text, "threshold: [not closed\n")
            await poll(lambda: store.status().failures == 1)
            neighbour = rules_path.parent / "gateway.log"
            for n in range(5):  # a log or a database written beside the rules
                await asyncio.to_thread(neighbour.write_text, f"line {n}\n")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            assert store.status().failures == 1
        finally:
            await store.close()

    asyncio.run(run())
