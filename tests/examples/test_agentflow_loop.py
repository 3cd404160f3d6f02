"""examples/agentflow_loop.py end to end: the example runs as a user would run it, against a real gateway whose rule
sends the agent's steps to a scripted frontier upstream (the embedded 270M model cannot plan; a frontier answer is
what a real run gets once a planner step escalates). One puzzle is solved, one is not; the outcomes reach the ledger.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from support.gateway_server import LOCAL_TEST_MODEL, REPO, GatewayProcess
from support.scripted_upstream import Reply, ScriptedUpstream

from examples.agentflow_loop import check_24

EXAMPLE = REPO / "examples" / "agentflow_loop.py"

RULES = """\
version: 1
threshold: 0.5
rules:
  - name: game-of-24-frontier
    description: The Game of 24 agent's steps go to the frontier tier.
    when: {text: {contains: Game of 24}}
    action: frontier
"""


def _plan(sub_goal: str) -> Reply:
    return Reply.text(
        "Justification: the tool evaluates arithmetic exactly.\n"
        f"Context: the numbers of the puzzle.\nSub-Goal: {sub_goal}\nTool Name: Python_Expression_Tool",
        usage=(420, 40, 0),
    )


SCRIPT = [
    # [1, 1, 1, 13]: a correct first step, then the final answer.
    _plan("Evaluate (13 - 1) * (1 + 1)."),
    Reply.text("(13 - 1) * (1 + 1)", usage=(120, 10, 0)),
    Reply.text("Answer: (13 - 1) * (1 + 1) = 24", usage=(150, 12, 0)),
    # [4, 7, 8, 8]: two wrong steps (a value of 20, then numbers that are not the puzzle's), a wrong final answer.
    _plan("Evaluate (8 - 4) * 7 - 8."),
    Reply.text("(8 - 4) * 7 - 8", usage=(120, 10, 0)),
    _plan("Try 8 + 8 + 8."),
    Reply.text("```\n8 + 8 + 8\n```", usage=(120, 10, 0)),
    Reply.text("Answer: (8 - 4) * 7 - 8", usage=(150, 12, 0)),
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(SCRIPT, default=Reply.status(500, "script used up")) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("agentflow")
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    config = {
        "local_models": [LOCAL_TEST_MODEL],
        "frontier_models": [
            {"name": "gpt-test", "model": "gpt-4.1-mini", "api_base": upstream.base_url, "api_key_env": None}
        ],
        "routing": {"rules_file": str(rules)},
    }
    with GatewayProcess(config, workdir) as gw:
        yield gw


def test_the_example_loop_solves_checks_and_reports(gateway: GatewayProcess, upstream: ScriptedUpstream) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--base-url",
            gateway.base_url,
            "--api-key",
            "test-key",
            "--max-steps",
            "2",
            "--puzzles",
            "1 1 1 13",
            "4 7 8 8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    print(out)  # shown by pytest when an assertion fails
    assert done.returncode == 0, done.stderr + out
    first, second = out.split("puzzle [4, 7, 8, 8]")

    # Per puzzle: the steps with the tier and rule that answered each, the cost, the exactly checked result.
    assert "puzzle [1, 1, 1, 13]" in first
    assert re.findall(r"step \d (\w+)", first) == ["planner", "executor", "generator"]
    assert re.findall(r"step \d (\w+)", second) == ["planner", "executor", "planner", "executor", "generator"]
    assert len(re.findall(r"tier=frontier +rule=game-of-24-frontier", out)) == 8
    assert "(8 - 4) * 7 - 8 -> wrong: equals 20, not 24" in second
    assert "8 + 8 + 8 -> wrong: uses [8, 8, 8], not each of [4, 7, 8, 8] once" in second
    assert "result solved: (13 - 1) * (1 + 1) (= 24)" in first
    assert "result not solved: (8 - 4) * 7 - 8 (equals 20, not 24)" in second
    costs = re.findall(r"cost \$([0-9.]+)", out)
    assert len(costs) == 2 and all(float(c) > 0 for c in costs)
    assert "solved 1 of 2" in out

    # The upstream saw the planner prompts in AgentFlow's shape, the second round carrying the first one's result.
    prompts = [body["messages"][-1]["content"] for body in upstream.bodies]
    planner_prompts = [p for p in prompts if "Tool Name:" in p]
    assert len(planner_prompts) == 3
    assert all("Available tools: [Python_Expression_Tool]" in p for p in planner_prompts)
    assert "Previous Steps:\n(none yet)" in planner_prompts[1]
    assert "evaluated (8 - 4) * 7 - 8; check: equals 20, not 24." in planner_prompts[2]

    # The outcomes reached the ledger: one successful session (its 3 steps), one failed one (its 5 steps).
    total = httpx.get(gateway.url + "/v1/reports/cost", timeout=10).json()["total"]
    assert (total["requests"], total["successes"], total["successful_requests"]) == (8, 1, 3)
    assert total["spend_per_success_usd"] == total["spend_usd"]
    sessions = httpx.get(gateway.url + "/dashboard/sessions", timeout=10).json()["sessions"]
    by_task = {s["task_id"]: s for s in sessions}
    assert by_task["24:1 1 1 13"]["outcome"]["success"] is True
    assert by_task["24:4 7 8 8"]["outcome"]["success"] is False
    assert (by_task["24:1 1 1 13"]["steps"], by_task["24:4 7 8 8"]["steps"]) == (3, 5)
    assert sorted(costs) == sorted(s["spend_usd"] for s in sessions)


@pytest.mark.parametrize(
    ("puzzle", "expression", "ok"),
    [
        ([3, 3, 8, 8], "8 / (3 - 8 / 3)", True),  # 23.999999999999993 in floats: the check is exact
        ([1, 1, 1, 13], "(13 - 1) * (1 + 1)", True),
        ([1, 1, 1, 13], "13 * 2 - 1 - 1", False),  # 2 is not a puzzle number
        ([1, 1, 1, 13], "(13 + 11)", False),
        ([4, 7, 8, 8], "(7 - 8 / 8) * 4", True),
        ([4, 7, 8, 8], "4 * 7 - 8 / 8 ** 0", False),  # ** is not allowed
        ([4, 7, 8, 8], "__import__('os').getpid()", False),  # never run: only parsed arithmetic is evaluated
        ([4, 7, 8, 8], "4 / (8 - 8) + 7", False),
        ([4, 7, 8, 8], "", False),
    ],
)
def test_the_tool_and_the_check_are_exact(puzzle: list[int], expression: str, ok: bool) -> None:
    assert check_24(puzzle, expression).ok is ok
